"""Istio's security resources for one workload: which PeerAuthentication, AuthorizationPolicy and
RequestAuthentication apply to it, and what they become on its inbound listener (the TLS mode and
the configs of the sidecar's ``authn.mtls``, ``authz.rbac`` and ``authn.jwt`` filters). Pure: policy
and a :class:`Workload` in, plain mappings out. No I/O, no protobuf.

Scope, as in Istio: a resource in the root namespace (``istio-system``) without a selector applies
to the whole mesh; one in the workload's namespace without a selector to the namespace; one whose
``selector.matchLabels`` are among the workload's labels (in its namespace, or in the root
namespace) to that workload; one with ``targetRef(s)`` naming a Service to the workloads serving it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sofamesh.pilot.policy.resource import Resource
from sofamesh.pilot.sidecars import NAMESPACE_LABEL, SA_LABEL, TLS_MODE_LABEL

ROOT_NAMESPACE = "istio-system"
DEFAULT_MODE = "PERMISSIVE"  # Istio's default when no PeerAuthentication says otherwise
_MODES = ("STRICT", "PERMISSIVE", "DISABLE")
_RBAC_SOURCE = ("principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
                "requestPrincipals", "notRequestPrincipals")
_UNAPPLIED_SOURCE = ("serviceAccounts", "notServiceAccounts", "remoteIpBlocks", "notRemoteIpBlocks")
# Written as the fields the sidecar checks: a service account ``ns/sa`` (or ``sa``, in the policy's
# namespace) is the principal ``*/ns/<ns>/sa/<sa>`` (any trust domain); the remote IP is the peer's
# address (a sidecar trusts no X-Forwarded-For), so ``remoteIpBlocks`` are ``ipBlocks`` when the
# source gives no ``ipBlocks`` of its own (both at once cannot be written: such a source never grants).
_AS_SOURCE = {"serviceAccounts": "principals", "notServiceAccounts": "notPrincipals",
              "remoteIpBlocks": "ipBlocks", "notRemoteIpBlocks": "notIpBlocks"}
_RBAC_OPERATION = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
# ``when`` keys the sidecar's authz.rbac evaluates per request; ``destination.port`` is decided here
_WHEN_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal", "request.auth.principal",
              "request.auth.audiences", "request.auth.presenter")
_WHEN_PREFIXES = ("request.headers[", "request.auth.claims[")
# RequestAuthentication fields only Envoy's JWT filter applies (the sidecar's authn.jwt reads headers
# and always forwards the token): kept out of the sidecar's config
_ENVOY_ONLY = ("from_params", "output_payload_to_header", "forward_original_token")


@dataclass(frozen=True, slots=True)
class Workload:
    """What a sidecar stands in front of: its namespace, its labels and the services it serves."""

    namespace: str
    labels: Mapping[str, str]
    services: frozenset[str]


def applies(r: Resource, w: Workload) -> bool:
    """Whether ``r`` (any of the three kinds) is in scope for ``w``."""
    spec = r.spec
    if r.namespace not in (w.namespace, ROOT_NAMESPACE):
        return False
    refs = [spec["targetRef"]] if spec.get("targetRef") else list(spec.get("targetRefs") or [])
    if refs:
        return r.namespace == w.namespace and any(
            isinstance(ref, Mapping) and ref.get("kind") == "Service" and ref.get("name") in w.services
            for ref in refs)
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    return all(w.labels.get(k) == v for k, v in sel.items())


def _level(r: Resource, w: Workload) -> int:
    """Istio's precedence of PeerAuthentication: workload (2) over namespace (1) over mesh (0)."""
    if (r.spec.get("selector") or {}).get("matchLabels"):
        return 2
    return 1 if r.namespace == w.namespace and r.namespace != ROOT_NAMESPACE else 0


def mtls_mode(peer_authentications: Iterable[Resource], w: Workload, port: int) -> str:
    """STRICT, PERMISSIVE or DISABLE for ``port`` of ``w``. The most specific level that sets a
    mode wins (a workload's ``portLevelMtls`` for this port, then its ``mtls``, then the namespace's,
    then the mesh's); ``UNSET`` inherits; within a level the first resource by name decides."""
    by_level: dict[int, list[Resource]] = {}
    for r in peer_authentications:
        if applies(r, w):
            by_level.setdefault(_level(r, w), []).append(r)
    for level in (2, 1, 0):
        for r in sorted(by_level.get(level, []), key=lambda r: (r.namespace, r.name)):
            if level == 2:
                port_mode = ((r.spec.get("portLevelMtls") or {}).get(str(port)) or {}).get("mode")
                if port_mode in _MODES:
                    return str(port_mode)
            mode = (r.spec.get("mtls") or {}).get("mode")
            if mode in _MODES:
                return str(mode)
    return DEFAULT_MODE


def _ports_allow(op: Mapping[str, Any], port: int) -> bool:
    ports, not_ports = op.get("ports") or [], op.get("notPorts") or []
    return (not ports or str(port) in ports) and str(port) not in not_ports


def _operation(op: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(op[k]) for k in _RBAC_OPERATION if op.get(k)}


def _source(src: Mapping[str, Any], namespace: str) -> dict[str, list[str]] | None:
    """An Istio source -> the filter's, or ``None`` when it names something that cannot be written."""
    out = {k: list(src[k]) for k in _RBAC_SOURCE if src.get(k)}
    for field in _UNAPPLIED_SOURCE:
        values = list(src.get(field) or [])
        if not values:
            continue
        target = _AS_SOURCE[field]
        if target in out:
            return None
        if field.endswith("erviceAccounts"):
            values = [f"*/ns/{v.rpartition('/')[0] or namespace}/sa/{v.rpartition('/')[2]}" for v in values]
        out[target] = values
    return out


def _rule(rule: Mapping[str, Any], port: int, action: str, namespace: str = "default") -> dict[str, Any] | None:
    """One Istio rule -> the filter's rule on ``port``, or ``None`` when it cannot match there."""
    out: dict[str, Any] = {}
    sources = [f.get("source") or {} for f in rule.get("from") or []]
    froms = []
    for src in sources:
        written = _source(src, namespace)
        if written is None:
            if action == "ALLOW":
                continue  # a source the sidecar cannot check never grants access
            written = {k: list(src[k]) for k in _RBAC_SOURCE if src.get(k)}
        froms.append({"source": written})
    if sources and not froms:
        return None
    if froms:
        out["from"] = froms
    tos = rule.get("to") or []
    if tos:
        kept = [{"operation": _operation(t.get("operation") or {})} for t in tos
                if _ports_allow(t.get("operation") or {}, port)]
        if not kept:
            return None  # every operation names other ports
        out["to"] = kept
    when = []
    for c in rule.get("when") or []:
        key, values, not_values = c.get("key", ""), c.get("values") or [], c.get("notValues") or []
        if key == "destination.port":
            if (values and str(port) not in values) or str(port) in not_values:
                return None
            continue
        if key in _WHEN_KEYS or key.startswith(_WHEN_PREFIXES):
            when.append({"key": key, **({"values": list(values)} if values else {}),
                         **({"notValues": list(not_values)} if not_values else {})})
        elif action == "ALLOW":
            return None  # a condition the sidecar cannot evaluate never grants access
        # in a DENY rule it is left out: the rule then denies more, never less (Istio's choice)
    if when:
        out["when"] = when
    return out


def rbac_config(authorization_policies: Iterable[Resource], w: Workload, port: int) -> dict[str, Any] | None:
    """The ``authz.rbac`` config for ``port`` of ``w``, or ``None`` when no policy applies.

    ALLOW and DENY keep their meaning; AUDIT becomes a dry-run policy: a matching request is
    counted (``rbac_shadow_denied``) and logged, and goes on. CUSTOM (an external authorizer) is
    not enforced and is left out. The annotation ``istio.io/dry-run: "true"`` makes a policy dry-run.
    """
    policies = []
    for r in authorization_policies:
        action = r.spec.get("action") or "ALLOW"
        if action == "CUSTOM" or not applies(r, w):
            continue
        dry_run = action == "AUDIT" or r.annotations.get("istio.io/dry-run") == "true"
        kernel_action = "DENY" if action == "AUDIT" else action
        rules = [x for x in (_rule(rule, port, kernel_action, r.namespace) for rule in r.spec.get("rules") or [])
                 if x is not None]
        policies.append({"name": f"{r.namespace}.{r.name}", "action": kernel_action, "rules": rules,
                         "dry_run": dry_run})
    return {"policies": policies} if policies else None


def jwt_config(request_authentications: Iterable[Resource], w: Workload) -> dict[str, Any] | None:
    """The ``authn.jwt`` config for ``w``: one provider per ``jwtRules`` entry of every applying
    RequestAuthentication. As in Istio a request without a token passes (with no request
    principal: an AuthorizationPolicy asks for one with ``requestPrincipals``), a bad one is
    refused."""
    providers = []
    for r in request_authentications:
        if not applies(r, w):
            continue
        for i, rule in enumerate(r.spec.get("jwtRules") or []):
            p: dict[str, Any] = {"name": f"{r.namespace}.{r.name}.{i}", "issuer": rule.get("issuer", "")}
            if rule.get("audiences"):
                p["audiences"] = list(rule["audiences"])
            if rule.get("jwks"):
                p["jwks"] = rule["jwks"]
            elif rule.get("jwksUri"):
                p["jwks_uri"] = rule["jwksUri"]
            if rule.get("fromHeaders"):
                p["from_headers"] = [{"name": h["name"], "prefix": h.get("prefix", "")} for h in rule["fromHeaders"]]
            if rule.get("fromParams"):
                p["from_params"] = [str(v) for v in rule["fromParams"]]
            if rule.get("outputPayloadToHeader"):
                p["output_payload_to_header"] = str(rule["outputPayloadToHeader"])
            if rule.get("forwardOriginalToken"):
                p["forward_original_token"] = True
            providers.append(p)
    return {"providers": providers} if providers else None


def inbound_filters(mode: str, jwt: Mapping[str, Any] | None, rbac: Mapping[str, Any] | None,
                    trust_domain: str) -> list[dict[str, Any]]:
    """The filters of an inbound listener, in order: peer authentication, then request
    authentication (which sets the request principal), then authorization."""
    out: list[dict[str, Any]] = []
    if mode != "DISABLE":
        out.append({"type": "authn.mtls", "config": {"mode": mode, "trust_domains": [trust_domain]}})
    if jwt is not None:
        providers = [{k: v for k, v in p.items() if k not in _ENVOY_ONLY} for p in jwt.get("providers") or []]
        out.append({"type": "authn.jwt", "config": {**jwt, "providers": providers}})
    if rbac is not None:
        out.append({"type": "authz.rbac", "config": dict(rbac)})
    return out


def identities(instances: Sequence[Mapping[str, str]], trust_domain: str, namespace: str) -> list[str]:
    """The SPIFFE ids an auto-mTLS client accepts for a destination: one per service account its
    instances run as (label ``sofamesh.io/service-account``, namespace ``sofamesh.io/namespace``
    else the service's); a destination whose instances name none accepts any id in the trust domain."""
    ids = sorted({f"spiffe://{trust_domain}/ns/{labels.get(NAMESPACE_LABEL) or namespace}/sa/{labels[SA_LABEL]}"
                  for labels in instances if labels.get(SA_LABEL)})
    return ids or [f"spiffe://{trust_domain}/*"]



__all__ = ["DEFAULT_MODE", "NAMESPACE_LABEL", "ROOT_NAMESPACE", "SA_LABEL", "TLS_MODE_LABEL", "Workload",
           "applies", "identities", "inbound_filters", "jwt_config", "mtls_mode", "rbac_config"]
