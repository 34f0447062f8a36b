"""EtcdPrefix: every key under one etcd prefix, read once and then followed through a watch (etcd v3
JSON gateway), for the caches Pilot keeps of etcd: the etcd registry, the etcd config store and the
served registries' shared entries.

``start`` reads the prefix and hands the key-values to ``snapshot``; the watch then hands each
batch of events to ``events``, in revision order. When the watch breaks (etcd restarted, the
revision compacted) ``broken`` is called, and 0.5 s later the prefix is read again and handed to
``snapshot`` whole. The fence key (``watch_fence.py``) is never handed over. What the values mean
stays with the caller.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

from sofamesh.core.net.loop import cancel
from sofamesh.plugins.registries.etcd.watch_fence import WatchFence

log = logging.getLogger("sofamesh.pilot.etcd")
KeyValues = list[dict[str, Any]]
"""etcd ``mvccpb.KeyValue`` objects as the gateway writes them (``key``, ``value`` base64)."""
Events = list[dict[str, Any]]
"""etcd watch events: ``kv``, and ``type`` ``DELETE`` for a delete (absent for a put)."""


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def key_of(kv: dict[str, Any]) -> str:
    return base64.b64decode(kv["key"]).decode(errors="replace")


def value_of(kv: dict[str, Any]) -> bytes:
    return base64.b64decode(kv.get("value", ""))


def prefix_end(prefix: bytes) -> bytes:
    """etcd's ``range_end`` for every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\x00"


class EtcdPrefix:
    """One prefix of one etcd; see the module docstring."""

    def __init__(self, endpoint: str, prefix: str, what: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix
        self.what = what  # for logs: "registry 'mesh'"
        self.fence = WatchFence(prefix)
        self.http: httpx.AsyncClient | None = None
        self.revision = 0
        self.watch_restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._snapshot: Callable[[KeyValues], object] = lambda kvs: None
        self._events: Callable[[Events], object] = lambda events: None
        self._broken: Callable[[], object] = lambda: None

    def range(self) -> dict[str, str]:
        p = self.prefix.encode()
        return {"key": b64(p), "range_end": b64(prefix_end(p))}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.http is None:
            self.http = httpx.AsyncClient(base_url=self.endpoint, timeout=httpx.Timeout(5.0, read=None))
        resp = await self.http.post(path, json=body)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    async def read(self) -> KeyValues:
        """The prefix now (without the fence key); the watch continues from its revision."""
        data = await self.post("/v3/kv/range", self.range())
        self.revision = int(data["header"]["revision"])
        kvs = [kv for kv in data.get("kvs", []) if not self.fence.is_fence(key_of(kv))]
        return kvs

    def follow(
        self,
        snapshot: Callable[[KeyValues], object],
        events: Callable[[Events], object],
        broken: Callable[[], object] = lambda: None,
    ) -> None:
        """Watch from the revision after the last :meth:`read` (call that first)."""
        self._snapshot, self._events, self._broken = snapshot, events, broken
        self.fence.reached(self.revision)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    async def _follow(self) -> None:
        while True:
            try:
                await self._watch()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.info("%s: etcd watch broke (%s); reading the prefix again", self.what, exc)
            self._broken()
            self.watch_restarts += 1
            await asyncio.sleep(0.5)
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                self._snapshot(await self.read())
                self.fence.reached(self.revision)

    async def _watch(self) -> None:
        if self.http is None:
            self.http = httpx.AsyncClient(base_url=self.endpoint, timeout=httpx.Timeout(5.0, read=None))
        body = {"create_request": {**self.range(), "start_revision": str(self.revision + 1)}}
        async with self.http.stream("POST", "/v3/watch", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                result = json.loads(line).get("result", {}) if line.strip() else {}
                if result.get("compact_revision") not in (None, "0"):
                    raise ValueError("watch revision compacted")
                events = result.get("events", [])
                if not events:
                    continue
                ours = [ev for ev in events if not self.fence.is_fence(key_of(ev["kv"]))]
                if ours:
                    self._events(ours)
                self.revision = max(self.revision, *(int(ev["kv"].get("mod_revision", "0")) for ev in events))
                self.fence.reached(self.revision)

    async def wait_fence(self) -> None:
        """A write the watch must deliver (``watch_fence.py``): the caller's cache is then current."""
        await self.fence.wait(self.post)


__all__ = ["EtcdPrefix", "Events", "KeyValues", "b64", "key_of", "prefix_end", "value_of"]
