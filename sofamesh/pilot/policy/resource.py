"""A validated policy resource and the values that name it: its key (group, kind, namespace, name)
and where its text came from (file and document position, etcd key, API request)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

DEFAULT_NAMESPACE = "default"


class ResourceKey(NamedTuple):
    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document came from: ``origin`` (a file, ``etcd:/key``, ``request``), the document's
    1-based position in a multi-document stream, and line numbers of its fields when known."""

    origin: str
    document: int = 1
    line: int = 0
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)

    def line_of(self, path: str) -> int:
        """The line of ``path`` or of its nearest ancestor (0 when unknown)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.line

    def describe(self, path: str = "") -> str:
        line = self.line_of(path) if path else self.line
        where = f"{self.origin}:{line}" if line else self.origin
        return f"{where} (document {self.document})"


@dataclass(frozen=True, slots=True)
class Resource:
    """One accepted resource. ``spec`` is a plain structure; treat it as immutable."""

    api_version: str
    kind: str
    namespace: str
    name: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: str = ""  # metadata.creationTimestamp (RFC 3339) when the document carries one

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.group, self.kind, self.namespace, self.name)

    def to_dict(self, version: str | None = None, resource_version: int | None = None) -> dict[str, Any]:
        """The Kubernetes object (``apiVersion``, ``kind``, ``metadata``, ``spec``); ``version``
        renders it as another served version of its group (the schemas are the same)."""
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if self.created:
            meta["creationTimestamp"] = self.created
        if resource_version is not None:
            meta["resourceVersion"] = str(resource_version)
        api = (f"{self.group}/{version}" if self.group else version) if version else self.api_version
        if not self.group:  # a core kind (a Secret): its fields sit beside metadata
            return {"apiVersion": api, "kind": self.kind, "metadata": meta, **copy.deepcopy(dict(self.spec))}
        return {"apiVersion": api, "kind": self.kind, "metadata": meta, "spec": copy.deepcopy(dict(self.spec))}

    def same_content(self, other: Resource) -> bool:
        """Equal but for the served version it was written in."""
        return (self.key, dict(self.spec), dict(self.labels), dict(self.annotations), self.created) == (
            other.key, dict(other.spec), dict(other.labels), dict(other.annotations), other.created)


__all__ = ["DEFAULT_NAMESPACE", "Resource", "ResourceKey", "Source"]
