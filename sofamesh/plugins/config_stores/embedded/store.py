"""The ``embedded`` config store: accepted resources kept in ``<data_dir>/policy-store.json``.

Only validated resources are written here (through Pilot's API), each write on disk before the
API answers, atomically (the embedded registry's ``atomic_write``), off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sofamesh.core.errors import PluginError
from sofamesh.pilot.policy.resource import Resource, ResourceKey, Source
from sofamesh.pilot.policy.store import Changed, ConfigStore, StoredDocument
from sofamesh.plugins.registries.embedded.store import atomic_write

_FORMAT = 1


class EmbeddedConfigStore(ConfigStore):
    writable = True

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._objects: dict[ResourceKey, dict[str, Any]] = {}
        self._changed: Changed = lambda: None
        self._lock = asyncio.Lock()
        self.writes = 0

    async def start(self, changed: Changed) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        if raw:
            try:
                doc = json.loads(raw)
                if doc.get("format") != _FORMAT:
                    raise ValueError(f"unknown format {doc.get('format')!r}")
                for obj in doc["resources"]:
                    meta = obj["metadata"]
                    key = ResourceKey(obj["apiVersion"].rpartition("/")[0], obj["kind"], meta["namespace"],
                                      meta["name"])
                    self._objects[key] = obj
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise PluginError(f"config store {self.name!r}: {self.path} is unreadable: {exc}") from exc
        self._changed = changed

    async def stop(self) -> None:
        async with self._lock:  # let a write in flight finish
            pass

    def documents(self) -> Sequence[StoredDocument]:
        origin = str(self.path)
        return [StoredDocument(Source(origin, i + 1), obj, key=key)
                for i, (key, obj) in enumerate(sorted(self._objects.items()))]

    async def _persist(self) -> None:
        data = json.dumps({"format": _FORMAT, "resources": [o for _, o in sorted(self._objects.items())]},
                          indent=1, sort_keys=True).encode()
        async with self._lock:
            await asyncio.to_thread(atomic_write, self.path, data)
            self.writes += 1

    async def put(self, resource: Resource) -> None:
        self._objects[resource.key] = resource.to_dict()
        await self._persist()
        self._changed()

    async def delete(self, key: ResourceKey) -> bool:
        if self._objects.pop(key, None) is None:
            return False
        await self._persist()
        self._changed()
        return True

    def describe(self) -> dict[str, Any]:
        return {"type": "embedded", "path": str(self.path), "resources": len(self._objects), "writes": self.writes}


__all__ = ["EmbeddedConfigStore"]
