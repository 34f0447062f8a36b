"""The ``etcd`` config store: each resource a JSON value at ``<prefix><group>/<kind>/<namespace>/<name>``
in etcd v3 (JSON gateway, as the etcd registry uses it), so every Pilot replica pointed at the
same prefix serves the same policy.

A watch from the last read revision keeps the cache current; when the watch breaks the prefix is
read again. A value someone else wrote that is not JSON is kept as a broken document for its key:
the resource's last accepted version keeps serving and the problem is reported.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from sofamesh.core.errors import PluginError
from sofamesh.pilot.policy.resource import Resource, ResourceKey
from sofamesh.pilot.policy.store import Changed, ConfigStore, StoredDocument, json_documents
from sofamesh.plugins.registries.etcd.prefix import EtcdPrefix, Events, KeyValues, b64, key_of, value_of

log = logging.getLogger("sofamesh.pilot.config_store.etcd")


class EtcdConfigStore(ConfigStore):
    writable = True

    def __init__(self, name: str, endpoint: str, prefix: str = "/sofamesh/policy/") -> None:
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._values: dict[str, bytes] = {}
        self._changed: Changed = lambda: None
        self._etcd = EtcdPrefix(self.endpoint, self.prefix, f"config store {name!r}")

    @property
    def revision(self) -> int:
        return self._etcd.revision

    def _key(self, key: ResourceKey) -> str:
        return f"{self.prefix}{key.group}/{key.kind}/{key.namespace}/{key.name}"

    def _parse_key(self, etcd_key: str) -> ResourceKey | None:
        parts = etcd_key[len(self.prefix):].split("/")
        return ResourceKey(*parts) if len(parts) == 4 else None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, changed: Changed) -> None:
        try:
            self._snapshot(await self._etcd.read())
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            await self._etcd.stop()
            raise PluginError(f"config store {self.name!r}: etcd at {self.endpoint} is unreachable: {exc}") from exc
        self._changed = changed
        self._etcd.follow(self._snapshot, self._events)

    async def stop(self) -> None:
        await self._etcd.stop()

    def _snapshot(self, kvs: KeyValues) -> None:
        values = {key_of(kv): value_of(kv) for kv in kvs}
        if values != self._values:
            self._values = values
            self._changed()

    def _events(self, events: Events) -> None:
        dirty = False
        for ev in events:
            k = key_of(ev["kv"])
            if ev.get("type") == "DELETE":
                dirty = self._values.pop(k, None) is not None or dirty
            else:
                v = value_of(ev["kv"])
                dirty = dirty or self._values.get(k) != v
                self._values[k] = v
        if dirty:
            self._changed()

    async def fence(self) -> None:
        """A write the watch must deliver (``etcd/watch_fence.py``): the documents are then as current as etcd."""
        try:
            await self._etcd.wait_fence()
        except httpx.HTTPError as exc:
            raise PluginError(f"config store {self.name!r}: fence write to {self.endpoint} failed: {exc}") from exc

    # -- reads and writes ----------------------------------------------------------------------
    def documents(self) -> Sequence[StoredDocument]:
        return json_documents(self._values, "etcd", self._parse_key)

    async def put(self, resource: Resource) -> None:
        k = self._key(resource.key)
        value = json.dumps(resource.to_dict(), sort_keys=True).encode()
        try:
            await self._etcd.post("/v3/kv/put", {"key": b64(k), "value": b64(value)})
        except httpx.HTTPError as exc:
            raise PluginError(f"config store {self.name!r}: cannot write {k}: {exc}") from exc
        if self._values.get(k) != value:  # applied now so a read right after sees it; the watch agrees later
            self._values[k] = value
            self._changed()

    async def delete(self, key: ResourceKey) -> bool:
        k = self._key(key)
        try:
            data = await self._etcd.post("/v3/kv/deleterange", {"key": b64(k)})
        except httpx.HTTPError as exc:
            raise PluginError(f"config store {self.name!r}: cannot delete {k}: {exc}") from exc
        if self._values.pop(k, None) is not None:
            self._changed()
        return int(data.get("deleted", "0")) > 0

    def describe(self) -> dict[str, Any]:
        return {"type": "etcd", "endpoint": self.endpoint, "prefix": self.prefix, "revision": self.revision,
                "keys": len(self._values), "watch_restarts": self._etcd.watch_restarts,
                "fences": self._etcd.fence.fences}


__all__ = ["EtcdConfigStore"]
