"""Following the security storage Pilot replicas share: a watch on the etcd prefix (from the revision
read at start) or on the ZooKeeper root and each blob under it, calling ``changed()`` on the event
loop when another replica wrote a blob (a root rotation step, a token revocation). Pilot then reads
the blobs again, so every replica applies the change while it runs, not at its next start.

Only the notification lives here; what a blob means stays with the CA and the token authority.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from kazoo.exceptions import KazooException
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from sofamesh.core.errors import PluginError
from sofamesh.core.net.loop import cancel
from sofamesh.pilot.security.shared_storage import EtcdStorage, ZookeeperStorage
from sofamesh.pilot.security.storage import SecretStorage

log = logging.getLogger("sofamesh.pilot.security")
Changed = Callable[[], object]


class StorageFollower(Protocol):
    async def start(self, changed: Changed) -> None: ...

    async def stop(self) -> None: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])  # a prefix ending in "/" (0x2f): never 0xff


class EtcdFollower:
    """A watch on ``<prefix>`` from the revision after the one read at start; a broken watch is
    opened again from the last revision seen (``changed()`` once, in case events were missed)."""

    def __init__(self, storage: EtcdStorage) -> None:
        self.endpoint = storage.endpoint
        p = storage.prefix.encode()
        self._range = {"key": _b64(p), "range_end": _b64(_prefix_end(p))}
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.revision = 0
        self.events = 0

    async def start(self, changed: Changed) -> None:
        self._http = httpx.AsyncClient(base_url=self.endpoint, timeout=httpx.Timeout(5.0, read=None))
        try:
            resp = await self._http.post("/v3/kv/range", json={**self._range, "count_only": True})
            resp.raise_for_status()
            self.revision = int(resp.json()["header"]["revision"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            await self._http.aclose()
            raise PluginError(f"security storage etcd {self.endpoint}: cannot watch: {exc}") from exc
        self._task = asyncio.get_running_loop().create_task(self._follow(changed))

    async def _follow(self, changed: Changed) -> None:
        assert self._http is not None
        while True:
            body = {"create_request": {**self._range, "start_revision": str(self.revision + 1)}}
            try:
                async with self._http.stream("POST", "/v3/watch", json=body) as resp:
                    resp.raise_for_status()
                    async for line in resp.aiter_lines():
                        result: dict[str, Any] = json.loads(line).get("result", {}) if line.strip() else {}
                        events = result.get("events", [])
                        if events:
                            self.revision = max(int(ev["kv"].get("mod_revision", "0")) for ev in events)
                            self.events += len(events)
                            changed()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.info("security storage: etcd watch broke (%s); watching again", exc)
            await asyncio.sleep(0.5)
            changed()

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class ZookeeperFollower:
    """kazoo's ``ChildrenWatch`` on the root and a ``DataWatch`` on each blob, on the storage's own
    client (both re-arm themselves, and after a reconnection); their callbacks only hand ``changed``
    to the loop. The storage closes the client; the watches end with it."""

    def __init__(self, storage: ZookeeperStorage) -> None:
        self.storage = storage
        self.root = storage.root
        self._watched: set[str] = set()
        self._stopped = False
        self.events = 0

    async def start(self, changed: Changed) -> None:
        loop = asyncio.get_running_loop()
        try:
            zk = await asyncio.to_thread(self.storage.client)
            await asyncio.to_thread(zk.ensure_path, self.root)
        except KazooException as exc:
            raise PluginError(f"security storage {self.storage.describe()}: cannot watch: {exc}") from exc

        def notify() -> None:  # kazoo's thread
            self.events += 1
            if not (self._stopped or loop.is_closed()):
                loop.call_soon_threadsafe(changed)

        def on_data(_data: bytes | None, _stat: Any) -> bool | None:
            notify()
            return False if self._stopped else None  # False: kazoo stops this watch

        def on_children(children: list[str]) -> bool | None:
            if self._stopped:
                return False
            for child in children:
                if child not in self._watched:
                    self._watched.add(child)
                    DataWatch(zk, f"{self.root}/{child}", on_data)
            notify()
            return None

        ChildrenWatch(zk, self.root, on_children)

    async def stop(self) -> None:
        self._stopped = True


def follower_for(storage: SecretStorage) -> StorageFollower | None:
    """The watch for a shared storage; ``None`` for a directory (one Pilot owns it)."""
    if isinstance(storage, EtcdStorage):
        return EtcdFollower(storage)
    if isinstance(storage, ZookeeperStorage):
        return ZookeeperFollower(storage)
    return None


__all__ = ["EtcdFollower", "StorageFollower", "ZookeeperFollower", "follower_for"]
