"""The policy model: the accepted resources by kind, namespace and name, with change listeners.

Fed with the documents of the config store; validates each (results cached by content), keeps
the last accepted version of a resource whose new document is rejected, and records every
rejection for ``/debug/policy``. Listeners (xDS generation, the ServiceEntry instance source) get
the keys that changed. No I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sofamesh.pilot.policy.resource import Resource, ResourceKey, Source
from sofamesh.pilot.policy.schema import Issue
from sofamesh.pilot.policy.store import StoredDocument
from sofamesh.pilot.policy.validate import Verdict, validate

PolicyListener = Callable[[frozenset[ResourceKey]], None]


class PolicyModel:
    """``index`` grows by one on every change; ``revision(key)`` is the index a resource last changed at."""

    def __init__(self) -> None:
        self._accepted: dict[ResourceKey, Resource] = {}
        self._origin: dict[ResourceKey, str] = {}
        self._revision: dict[ResourceKey, int] = {}
        self._rejections: list[Verdict] = []
        self._cache: dict[tuple[str, Source], Verdict] = {}
        self._listeners: list[PolicyListener] = []
        self.index = 1

    # -- reading -------------------------------------------------------------------------------
    def get(self, key: ResourceKey) -> Resource | None:
        return self._accepted.get(key)

    def resources(self, kind: str | None = None, namespace: str | None = None) -> list[Resource]:
        """Accepted resources, sorted by kind, namespace and name; ``None`` means any."""
        return [r for k, r in sorted(self._accepted.items())
                if (kind is None or k.kind == kind) and (namespace is None or k.namespace == namespace)]

    def revision(self, key: ResourceKey) -> int:
        return self._revision.get(key, 0)

    def origin(self, key: ResourceKey) -> str:
        """Where the accepted version of ``key`` came from."""
        return self._origin.get(key, "")

    def rejections(self) -> list[Verdict]:
        """The documents of the store that are rejected now (their resource keeps its last accepted version)."""
        return list(self._rejections)

    # -- changing ------------------------------------------------------------------------------
    def add_listener(self, listener: PolicyListener) -> None:
        self._listeners.append(listener)

    def _verdict(self, doc: StoredDocument) -> Verdict:
        try:
            content = json.dumps(doc.body, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return validate(doc.body, doc.source)
        cached = self._cache.get((content, doc.source))
        if cached is None:
            cached = validate(doc.body, doc.source)
            self._cache[(content, doc.source)] = cached
        return cached

    def sync(self, documents: Sequence[StoredDocument]) -> frozenset[ResourceKey]:
        """Make the model match ``documents`` (everything the store holds); return the keys that changed."""
        accepted: dict[ResourceKey, Resource] = {}
        origin: dict[ResourceKey, str] = {}
        rejections: list[Verdict] = []
        used: set[tuple[str, Source]] = set()
        for doc in documents:
            if doc.problem is not None:
                verdict = Verdict(doc.source, str(doc.key) if doc.key else "<unreadable>", None,
                                  (Issue("", doc.problem),), doc.key)
            else:
                verdict = self._verdict(doc)
                try:
                    used.add((json.dumps(doc.body, sort_keys=True, default=str), doc.source))
                except (TypeError, ValueError):
                    pass
            key = verdict.key
            if key is not None and key in accepted:
                rejections.append(Verdict(doc.source, verdict.ref, None, (Issue(
                    "metadata.name", f"{key} is already defined by {origin[key]}"),), key))
                continue
            if verdict.resource is not None and key is not None:
                accepted[key] = verdict.resource
                origin[key] = doc.source.describe()
                continue
            rejections.append(verdict)
            if key is not None and key in self._accepted:  # the last accepted version keeps serving
                accepted[key] = self._accepted[key]
                origin[key] = self._origin.get(key, "")
        self._cache = {k: v for k, v in self._cache.items() if k in used}
        self._rejections = rejections
        changed = {k for k in accepted.keys() | self._accepted.keys()
                   if k not in accepted or k not in self._accepted or not accepted[k].same_content(self._accepted[k])
                   or accepted[k].api_version != self._accepted[k].api_version}
        self._accepted, self._origin = accepted, origin
        if changed:
            self.index += 1
            for k in changed:
                self._revision[k] = self.index
            frozen = frozenset(changed)
            for listener in self._listeners:
                listener(frozen)
        return frozenset(changed)

    def describe(self) -> dict[str, Any]:
        return {"index": self.index,
                "resources": [{"key": str(k), "origin": self._origin.get(k, ""), "revision": self.revision(k)}
                              for k in sorted(self._accepted)],
                "rejected": [v.to_dict() for v in self._rejections]}


__all__ = ["PolicyListener", "PolicyModel"]
