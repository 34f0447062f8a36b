"""One document in, one verdict out: an accepted :class:`Resource` (with warnings) or the issues
that reject it, as the Kubernetes API server (CRD schema) and Istio's webhook would decide."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sofamesh.pilot.policy.edge_rate_limit import check_edge_rate_limit
from sofamesh.pilot.policy.kinds import Kind, by_api_version, known_kinds
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE, Resource, ResourceKey, Source
from sofamesh.pilot.policy.schema import DNS1123_SUBDOMAIN, AnyValue, Issue, MapOf, Obj, Report, Str, is_dns1123_label
from sofamesh.pilot.policy.transcoders import check_transcoders
from sofamesh.pilot.policy.webhook import check_labels

# ObjectMeta fields a client may send; the server sets or ignores all but name, namespace, labels, annotations.
_METADATA = Obj({
    "name": Str(), "namespace": Str(), "labels": MapOf(Str()), "annotations": MapOf(Str()), "generateName": Str(),
    "uid": Str(), "resourceVersion": Str(), "generation": AnyValue(), "creationTimestamp": AnyValue(),
    "deletionTimestamp": AnyValue(), "deletionGracePeriodSeconds": AnyValue(), "finalizers": AnyValue(),
    "ownerReferences": AnyValue(), "managedFields": AnyValue(), "selfLink": Str(),
})
_TOP = ("apiVersion", "kind", "metadata", "spec", "status")
_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one document: ``resource`` when accepted; ``issues`` holds the errors that
    rejected it and the warnings either way. ``ref`` names it as well as it could be read
    (``VirtualService default/reviews``)."""

    source: Source
    ref: str
    resource: Resource | None
    issues: tuple[Issue, ...] = field(default_factory=tuple)
    key: ResourceKey | None = None

    @property
    def accepted(self) -> bool:
        return self.resource is not None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if not i.warning]

    def lines(self) -> list[str]:
        """One line per issue: ``file.yaml:14 (document 2) VirtualService default/x: spec.http[0]: ...``."""
        return [f"{self.source.describe(i.path)} {self.ref}: {'warning: ' if i.warning else ''}{i}"
                for i in self.issues]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source.describe(), "ref": self.ref, "accepted": self.accepted,
                "issues": [i.to_dict() for i in self.issues]}


def _ref(kind: str, namespace: str, name: str) -> str:
    return f"{kind or '<no kind>'} {namespace}/{name or '<no name>'}"


def validate(body: Any, source: Source, namespace: str | None = None) -> Verdict:
    """Validate one object. ``namespace`` is the request's (REST path or ``-n``): the object's own
    ``metadata.namespace`` must agree with it, and it fills a missing one."""
    report = Report()
    if not isinstance(body, Mapping):
        report.error("", f"a resource must be an object, got {type(body).__name__}")
        return Verdict(source, _ref("", namespace or DEFAULT_NAMESPACE, ""), None, tuple(report.issues))
    api_version, kind_name = body.get("apiVersion"), body.get("kind")
    raw_meta = body.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    name: str = meta["name"] if isinstance(meta.get("name"), str) else ""
    ns: str | None = meta["namespace"] if isinstance(meta.get("namespace"), str) and meta["namespace"] else None
    if namespace is not None and ns is not None and ns != namespace:
        report.error("metadata.namespace", f"the namespace of the object ({ns}) does not match the namespace of "
                                           f"the request ({namespace})")
    ns = ns or namespace or DEFAULT_NAMESPACE
    ref = _ref(kind_name if isinstance(kind_name, str) else "", ns, name)
    kind: Kind | None = None
    if not isinstance(api_version, str) or not api_version:
        report.error("apiVersion", "required field is missing")
    if not isinstance(kind_name, str) or not kind_name:
        report.error("kind", "required field is missing")
    if isinstance(api_version, str) and isinstance(kind_name, str) and api_version and kind_name:
        kind = by_api_version(api_version, kind_name)
        if kind is None:
            report.error("kind", f"no kind {kind_name!r} is served in version {api_version!r} "
                                 f"(known: {known_kinds()})")
    top_level = kind is not None and kind.top_level
    for k in body:
        if k not in _TOP and not (top_level and kind is not None and k in kind.schema.fields):
            report.error(str(k), f'unknown field "{k}"')
    _METADATA.check(body.get("metadata", {}), "metadata", report)
    if not name:
        report.error("metadata.name", "required field is missing")
    elif len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        report.error("metadata.name", f"invalid name {name!r}: a lowercase RFC 1123 subdomain must consist of "
                                      "lower case alphanumeric characters, '-' or '.'")
    if not is_dns1123_label(ns):
        report.error("metadata.namespace", f"invalid namespace {ns!r}: a lowercase RFC 1123 label")
    check_labels(meta.get("labels"), "metadata.labels", report)
    key = ResourceKey(kind.group, kind.kind, ns, name) if kind is not None and name else None
    fields: Mapping[str, Any] | None = None
    if kind is not None and kind.top_level:
        if "spec" in body:
            report.error("spec", f'unknown field "spec": a {kind.kind} has its fields beside metadata')
        fields = {k: v for k, v in body.items() if k in kind.schema.fields}
        kind.schema.check(fields, "", report)
        if not report.errors:
            kind.check(ns, name, fields, report)
    elif kind is not None:
        spec = body.get("spec")
        if spec is None:
            report.error("spec", "required field is missing")
        else:
            kind.schema.check(spec, "spec", report)
            if not report.errors:  # the webhook sees only objects the schema admitted
                kind.check(ns, name, spec, report)
            annotations = meta.get("annotations")
            if kind.kind == "VirtualService" and isinstance(spec, Mapping) and isinstance(annotations, Mapping):
                check_transcoders(annotations, spec, report)
            if kind.kind == "Gateway" and isinstance(annotations, Mapping):
                check_edge_rate_limit(annotations, report)
    issues = tuple(report.issues)
    if report.errors or kind is None:
        return Verdict(source, ref, None, issues, key)
    labels = dict(meta.get("labels") or {})
    annotations = dict(meta.get("annotations") or {})
    created = str(meta.get("creationTimestamp") or "")
    stored = copy.deepcopy(dict(fields if fields is not None else body["spec"]))
    if kind.normalize is not None:
        stored = kind.normalize(stored)
    resource = Resource(str(api_version), kind.kind, ns, name, stored, labels, annotations, created)
    return Verdict(source, ref, resource, issues, key)


__all__ = ["Verdict", "validate"]
