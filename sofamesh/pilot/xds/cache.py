"""Per-node versioned snapshots: generator output, serialized once and shared by nodes of equal scope.

A :class:`TypeSnapshot` holds every resource of one type URL for one node scope, each packed as
``Any`` with a content version (a short hash of its bytes), and a version for the whole set.
Snapshots are rebuilt lazily after :meth:`SnapshotCache.invalidate` (called once per debounced
mesh change); a resource object a generator returns unchanged is not serialized again. Each
snapshot names the snapshot of the same scope it replaced and the resources that differ from it, so
a push to a node that holds the previous one costs what changed, not the size of the mesh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from sofamesh.pilot.xds.generator import NodeInfo, XdsGenerator, XdsResource

if TYPE_CHECKING:
    from sofamesh.pilot.model import MeshModel


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    any: any_pb2.Any
    version: str
    wildcard: bool
    delta_wire: bytes  # this resource as one element of DeltaDiscoveryResponse.resources, on the wire


def set_version(entries: Iterable[Entry]) -> str:
    """The version of a set of resources: a hash of their names and versions."""
    h = hashlib.blake2b(digest_size=8)
    for e in sorted(entries, key=lambda e: e.name):
        h.update(e.name.encode())
        h.update(b"\0")
        h.update(e.version.encode())
        h.update(b"\n")
    return h.hexdigest()


_NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TypeSnapshot:
    type_url: str
    entries: Mapping[str, Entry]
    version: str
    previous: str = ""  # version of the snapshot of the same scope this one replaced ("" for the first)
    changed: frozenset[str] = _NOTHING  # names added, changed or removed since ``previous``

    def select(self, names: Iterable[str] | None) -> list[Entry]:
        """Wildcard resources when ``names`` is ``None``, else the named ones that exist."""
        if names is None:
            return [e for e in self.entries.values() if e.wildcard]
        return [self.entries[n] for n in sorted(set(names)) if n in self.entries]


def _pack(resource: XdsResource, type_url: str) -> Entry:
    data = resource.message.SerializeToString(deterministic=True)
    packed = any_pb2.Any(type_url=type_url, value=data)
    version = hashlib.blake2b(data, digest_size=8).hexdigest()
    wire = discovery_pb2.DeltaDiscoveryResponse(
        resources=[discovery_pb2.Resource(name=resource.name, version=version, resource=packed)]
    ).SerializeToString()
    return Entry(resource.name, packed, version, resource.wildcard, wire)


class SnapshotCache:
    """Builds and caches :class:`TypeSnapshot` objects for (type URL, node scope)."""

    def __init__(self, model: MeshModel, generators: Sequence[tuple[str, XdsGenerator]]) -> None:
        self.model = model
        self.generation = 0
        self._by_type: dict[str, list[tuple[str, XdsGenerator]]] = {}
        for name, gen in generators:
            self._by_type.setdefault(gen.type_url, []).append((name, gen))
        self._snapshots: dict[tuple[str, tuple[Hashable, ...]], TypeSnapshot] = {}
        self._last: dict[tuple[str, tuple[Hashable, ...]], TypeSnapshot] = {}  # survives invalidate
        self._packed: dict[int, tuple[XdsResource, Entry]] = {}
        self._next_packed: dict[int, tuple[XdsResource, Entry]] = {}
        self.conflicts: list[str] = []

    @property
    def type_urls(self) -> list[str]:
        return sorted(self._by_type)

    def invalidate(self) -> None:
        """The mesh changed: snapshots are rebuilt on next use."""
        self.generation += 1
        self._snapshots.clear()
        self._packed, self._next_packed = self._next_packed or self._packed, {}

    def get(self, type_url: str, node: NodeInfo) -> TypeSnapshot:
        gens = self._by_type.get(type_url, [])
        key = (type_url, tuple(g.scope(node) for _, g in gens))
        snap = self._snapshots.get(key)
        if snap is None:
            snap = self._build(type_url, gens, node, self._last.get(key))
            self._snapshots[key] = self._last[key] = snap
        return snap

    def latest(self, type_url: str, node: NodeInfo) -> TypeSnapshot | None:
        """The last snapshot built for ``node``'s scope, without building one (``None``: none yet)."""
        gens = self._by_type.get(type_url, [])
        return self._last.get((type_url, tuple(g.scope(node) for _, g in gens)))

    def _build(self, type_url: str, gens: list[tuple[str, XdsGenerator]], node: NodeInfo,
               last: TypeSnapshot | None) -> TypeSnapshot:
        entries: dict[str, Entry] = {}
        owners: dict[str, str] = {}
        for gen_name, gen in gens:
            for res in gen.generate(self.model, node):
                hit = self._packed.get(id(res)) or self._next_packed.get(id(res))
                entry = hit[1] if hit is not None and hit[0] is res else _pack(res, type_url)
                self._next_packed[id(res)] = (res, entry)
                if res.name in entries:
                    self.conflicts.append(f"{type_url} {res.name!r}: generator {gen_name} repeats a name "
                                          f"already generated by {owners[res.name]}; first one kept")
                    del self.conflicts[:-20]
                    continue
                entries[res.name] = entry
                owners[res.name] = gen_name
        version = set_version(entries.values())
        if last is None:
            return TypeSnapshot(type_url, MappingProxyType(entries), version)
        if last.version == version:  # same content: same changes since the one before
            return TypeSnapshot(type_url, MappingProxyType(entries), version, last.previous, last.changed)
        old = last.entries
        changed = {name for name, e in entries.items()
                   if (o := old.get(name)) is None or o.version != e.version or o.wildcard != e.wildcard}
        changed.update(name for name in old if name not in entries)
        return TypeSnapshot(type_url, MappingProxyType(entries), version, last.version, frozenset(changed))


__all__ = ["Entry", "SnapshotCache", "TypeSnapshot", "set_version"]
