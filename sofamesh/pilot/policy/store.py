"""The config store contract: what a config store plugin provides to Pilot.

A config store holds policy documents (``files``: a directory of YAML; ``embedded``: a file in
Pilot's data directory; ``etcd``: keys shared by Pilot replicas). It keeps the raw documents;
Pilot's :class:`~sofamesh.pilot.policy.model.PolicyModel` validates them, so a document another
writer left broken never replaces the last accepted version of its resource.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sofamesh.core.errors import PluginError
from sofamesh.pilot.options import check_options
from sofamesh.pilot.policy.resource import Resource, ResourceKey, Source

Changed = Callable[[], object]
"""Called by a store after its documents changed (Pilot then reads ``documents()`` again)."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """One document as a store holds it: its parsed body, or the ``problem`` that kept it from being
    read (a YAML syntax error, a value that is not JSON). ``key`` is the resource the store knows it
    stands for (from an etcd key), so a broken write leaves that resource's last accepted version."""

    source: Source
    body: Any
    problem: str | None = None
    key: ResourceKey | None = None


def json_documents(values: Mapping[str, bytes], scheme: str,
                   parse_key: Callable[[str], ResourceKey | None]) -> list[StoredDocument]:
    """The documents of a store that keeps each resource as a JSON value under a key (etcd,
    ZooKeeper), in key order; a value that is not JSON is a broken document for its key."""
    out = []
    for k, raw in sorted(values.items()):
        source = Source(f"{scheme}:{k}")
        try:
            out.append(StoredDocument(source, json.loads(raw), key=parse_key(k)))
        except (ValueError, UnicodeDecodeError) as exc:
            out.append(StoredDocument(source, None, problem=f"value is not JSON: {exc}", key=parse_key(k)))
    return out


@dataclass(frozen=True, slots=True)
class ConfigStoreContext:
    """What a config store factory gets: its type name, its options, Pilot's data directory."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    data_dir: Path = Path(".")

    def check_options(self, known: Sequence[str]) -> dict[str, Any]:
        """A copy of ``options``; :class:`~sofamesh.core.errors.ConfigError` on an unknown key."""
        return check_options(self.options, known, "config_store.options", f"config store {self.name!r}")


class ConfigStore(ABC):
    """One config store as Pilot sees it. ``documents()`` is a synchronous view of its local cache."""

    name: str
    writable: bool = False

    @abstractmethod
    async def start(self, changed: Changed) -> None:
        """Load or connect and fill the cache, then call ``changed()`` after every later change."""

    @abstractmethod
    async def stop(self) -> None:
        """Release connections and timers."""

    @abstractmethod
    def documents(self) -> Sequence[StoredDocument]:
        """Every document the store holds now, in a stable order."""

    def _read_only(self) -> PluginError:
        return PluginError(f"config store {self.name!r} is read-only: change its source instead")

    async def put(self, resource: Resource) -> None:
        """Create or replace ``resource`` (already validated); durable when this returns."""
        raise self._read_only()

    async def delete(self, key: ResourceKey) -> bool:
        """Remove one resource; ``False`` when it was not there."""
        raise self._read_only()

    async def fence(self) -> None:
        """Return once ``documents()`` holds everything the store held when this was called (a store
        shared by Pilot replicas: its watch has caught up); a local store is always current."""
        return None

    def describe(self) -> dict[str, Any]:
        """What ``/debug/policy`` shows about this store."""
        return {}


class ConfigStoreFactory(Protocol):
    """What ``pilot_register_config_stores`` puts in the catalog."""

    def create(self, context: ConfigStoreContext) -> ConfigStore: ...


__all__ = ["Changed", "ConfigStore", "ConfigStoreContext", "ConfigStoreFactory", "StoredDocument", "json_documents"]
