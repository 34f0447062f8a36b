"""The ``etcd`` config store: each resource a JSON value at ``<prefix><group>/<kind>/<namespace>/<name>``
in etcd v3 (JSON gateway, as the etcd registry uses it), so every Pilot replica pointed at the
same prefix serves the same policy.

A watch from the last read revision keeps the cache current; when the watch breaks the prefix is
read again. A value someone else wrote that is not JSON is kept as a broken document for its key:
the resource's last accepted version keeps serving and the problem is reported.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from sofamesh.core.errors import PluginError
from sofamesh.core.net.loop import cancel
from sofamesh.pilot.policy.resource import Resource, ResourceKey
from sofamesh.pilot.policy.store import Changed, ConfigStore, StoredDocument, json_documents
from sofamesh.plugins.registries.etcd.store import prefix_end
from sofamesh.plugins.registries.etcd.watch_fence import WatchFence

log = logging.getLogger("sofamesh.pilot.config_store.etcd")


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


class EtcdConfigStore(ConfigStore):
    writable = True

    def __init__(self, name: str, endpoint: str, prefix: str = "/sofamesh/policy/") -> None:
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._values: dict[str, bytes] = {}
        self._http: httpx.AsyncClient | None = None
        self._changed: Changed = lambda: None
        self._task: asyncio.Task[None] | None = None
        self.revision = 0
        self.watch_restarts = 0
        self._fence = WatchFence(self.prefix)

    def _key(self, key: ResourceKey) -> str:
        return f"{self.prefix}{key.group}/{key.kind}/{key.namespace}/{key.name}"

    def _parse_key(self, etcd_key: str) -> ResourceKey | None:
        parts = etcd_key[len(self.prefix):].split("/")
        return ResourceKey(*parts) if len(parts) == 4 else None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, changed: Changed) -> None:
        self._http = httpx.AsyncClient(base_url=self.endpoint, timeout=httpx.Timeout(5.0, read=None))
        try:
            await self._load()
        except httpx.HTTPError as exc:
            await self._http.aclose()
            raise PluginError(f"config store {self.name!r}: etcd at {self.endpoint} is unreachable: {exc}") from exc
        self._changed = changed
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        resp = await self._http.post(path, json=body)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def _range(self) -> dict[str, str]:
        p = self.prefix.encode()
        return {"key": _b64(p), "range_end": _b64(prefix_end(p))}

    async def _load(self) -> bool:
        data = await self._call("/v3/kv/range", self._range())
        values = {_unb64(kv["key"]).decode(errors="replace"): _unb64(kv.get("value", ""))
                  for kv in data.get("kvs", [])}
        values.pop(self._fence.key, None)
        self.revision = int(data["header"]["revision"])
        changed = values != self._values
        self._values = values
        if changed:
            self._changed()
        self._fence.reached(self.revision)
        return changed

    async def _follow(self) -> None:
        while True:
            try:
                await self._watch()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.info("config store %s: etcd watch broke (%s); reading the prefix again", self.name, exc)
            self.watch_restarts += 1
            await asyncio.sleep(0.5)
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                await self._load()

    async def _watch(self) -> None:
        assert self._http is not None
        body = {"create_request": {**self._range(), "start_revision": str(self.revision + 1)}}
        async with self._http.stream("POST", "/v3/watch", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if result.get("compact_revision") not in (None, "0"):
                    raise ValueError("watch revision compacted")
                dirty = False
                events = result.get("events", [])
                for ev in events:
                    k = _unb64(ev["kv"]["key"]).decode(errors="replace")
                    if self._fence.is_fence(k):
                        continue
                    if ev.get("type") == "DELETE":
                        dirty = self._values.pop(k, None) is not None or dirty
                    else:
                        v = _unb64(ev["kv"].get("value", ""))
                        dirty = dirty or self._values.get(k) != v
                        self._values[k] = v
                rev = result.get("header", {}).get("revision")
                if rev is not None:
                    self.revision = max(self.revision, int(rev))
                if dirty:
                    self._changed()
                if events:
                    self._fence.reached(max(int(ev["kv"].get("mod_revision", "0")) for ev in events))

    # -- reads and writes ----------------------------------------------------------------------
    def documents(self) -> Sequence[StoredDocument]:
        return json_documents(self._values, "etcd", self._parse_key)

    async def put(self, resource: Resource) -> None:
        k = self._key(resource.key)
        value = json.dumps(resource.to_dict(), sort_keys=True).encode()
        try:
            await self._call("/v3/kv/put", {"key": _b64(k), "value": _b64(value)})
        except httpx.HTTPError as exc:
            raise PluginError(f"config store {self.name!r}: cannot write {k}: {exc}") from exc
        if self._values.get(k) != value:  # applied now so a read right after sees it; the watch agrees later
            self._values[k] = value
            self._changed()

    async def delete(self, key: ResourceKey) -> bool:
        k = self._key(key)
        try:
            data = await self._call("/v3/kv/deleterange", {"key": _b64(k)})
        except httpx.HTTPError as exc:
            raise PluginError(f"config store {self.name!r}: cannot delete {k}: {exc}") from exc
        if self._values.pop(k, None) is not None:
            self._changed()
        return int(data.get("deleted", "0")) > 0

    async def fence(self) -> None:
        """A write the watch must deliver (``watch_fence.py``): the documents are then as current as etcd."""
        try:
            await self._fence.wait(self._call)
        except httpx.HTTPError as exc:
            raise PluginError(f"config store {self.name!r}: fence write to {self.endpoint} failed: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        return {"type": "etcd", "endpoint": self.endpoint, "prefix": self.prefix, "revision": self.revision,
                "keys": len(self._values), "watch_restarts": self.watch_restarts,
                "fences": self._fence.fences}


__all__ = ["EtcdConfigStore"]
