"""The ``zookeeper`` config store: each resource a JSON znode at ``<root>/<group>/<kind>/<namespace>/<name>``
in ZooKeeper, so every Pilot replica pointed at the same root serves the same policy.

kazoo's ``TreeCache`` recipe keeps the subtree current (its watches are re-armed on every read and
after a reconnection); its events, delivered on kazoo's thread, are handed to the event loop, which
owns the documents. A value someone else wrote that is not JSON is kept as a broken document for its
key: the resource's last accepted version keeps serving and the problem is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.recipe.cache import TreeCache, TreeEvent

from sofamesh.core.errors import PluginError
from sofamesh.pilot.policy.resource import Resource, ResourceKey
from sofamesh.pilot.policy.store import Changed, ConfigStore, StoredDocument, json_documents

log = logging.getLogger("sofamesh.pilot.config_store.zookeeper")


class ZookeeperConfigStore(ConfigStore):
    writable = True

    def __init__(self, name: str, hosts: str, root: str = "/sofamesh/policy", session_timeout_s: float = 10.0) -> None:
        self.name = name
        self.hosts = hosts
        self.root = "/" + root.strip("/")
        self._timeout = session_timeout_s
        self._values: dict[str, bytes] = {}
        self._changed: Changed = lambda: None
        self._zk: KazooClient | None = None
        self._tree: TreeCache | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.zxid = 0  # the largest modification zxid seen: the store's own order of changes
        self.events = 0

    def _path(self, key: ResourceKey) -> str:
        for part in key:
            if not part or "/" in part:
                raise PluginError(f"config store {self.name!r}: {key}: a key part is empty or has '/'")
        return f"{self.root}/{key.group}/{key.kind}/{key.namespace}/{key.name}"

    def _parse_path(self, path: str) -> ResourceKey | None:
        parts = path[len(self.root) + 1 :].split("/")
        return ResourceKey(*parts) if len(parts) == 4 and path.startswith(self.root + "/") else None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, changed: Changed) -> None:
        self._loop = asyncio.get_running_loop()
        zk = KazooClient(
            hosts=self.hosts,
            timeout=self._timeout,
            connection_retry={"max_tries": -1, "max_delay": 1.0},
            command_retry={"max_tries": 3, "max_delay": 1.0},
        )
        try:
            await asyncio.to_thread(zk.start, self._timeout)
            await asyncio.to_thread(zk.ensure_path, self.root)
        except (KazooException, OSError) as exc:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(zk.stop)
            raise PluginError(f"config store {self.name!r}: ZooKeeper at {self.hosts} is unreachable: {exc}") from exc
        self._zk = zk
        ready = threading.Event()
        tree = TreeCache(zk, self.root)

        def on_event(event: TreeEvent) -> None:  # kazoo's thread
            if event.event_type == TreeEvent.INITIALIZED:
                ready.set()
                return
            data = event.event_data
            if data is None or self._loop is None or self._loop.is_closed():
                return
            removed = event.event_type == TreeEvent.NODE_REMOVED
            self._loop.call_soon_threadsafe(
                self._apply,
                data.path,
                None if removed else (data.data or b""),
                data.stat.mzxid if data.stat is not None else 0,
            )

        tree.listen(on_event)
        tree.start()
        self._tree = tree
        if not await asyncio.to_thread(ready.wait, self._timeout):
            await self.stop()
            raise PluginError(f"config store {self.name!r}: could not read {self.root} within {self._timeout:.0f} s")
        await asyncio.sleep(0)  # let the events queued before INITIALIZED run
        self._changed = changed

    async def stop(self) -> None:
        if self._tree is not None:
            tree, self._tree = self._tree, None
            tree.close()
        if self._zk is not None:
            zk, self._zk = self._zk, None
            await asyncio.to_thread(_close, zk)

    def _apply(self, path: str, value: bytes | None, zxid: int) -> None:
        if self._parse_path(path) is None:
            return  # a group, kind or namespace node
        self.events += 1
        self.zxid = max(self.zxid, zxid)
        if value is None:
            if self._values.pop(path, None) is not None:
                self._changed()
        elif self._values.get(path) != value:
            self._values[path] = value
            self._changed()

    # -- reads and writes ----------------------------------------------------------------------
    def documents(self) -> Sequence[StoredDocument]:
        return json_documents(self._values, "zookeeper", self._parse_path)

    def _client(self) -> KazooClient:
        if self._zk is None:
            raise PluginError(f"config store {self.name!r} is not started")
        return self._zk

    async def put(self, resource: Resource) -> None:
        path = self._path(resource.key)
        value = json.dumps(resource.to_dict(), sort_keys=True).encode()
        zk = self._client()

        def write() -> None:
            try:
                zk.set(path, value)
            except NoNodeError:
                try:
                    zk.create(path, value, makepath=True)
                except NodeExistsError:  # another replica created it meanwhile: ours is the later write
                    zk.set(path, value)

        try:
            await asyncio.to_thread(write)
        except (KazooException, OSError) as exc:
            raise PluginError(f"config store {self.name!r}: cannot write {path}: {exc}") from exc
        if self._values.get(path) != value:  # applied now so a read right after sees it; the watch agrees later
            self._values[path] = value
            self._changed()

    async def delete(self, key: ResourceKey) -> bool:
        path = self._path(key)
        zk = self._client()
        try:
            await asyncio.to_thread(zk.delete, path)
            existed = True
        except NoNodeError:
            existed = False
        except (KazooException, OSError) as exc:
            raise PluginError(f"config store {self.name!r}: cannot delete {path}: {exc}") from exc
        if self._values.pop(path, None) is not None:
            self._changed()
        return existed

    def describe(self) -> dict[str, Any]:
        zk = self._zk
        return {
            "type": "zookeeper",
            "hosts": self.hosts,
            "root": self.root,
            "zxid": self.zxid,
            "keys": len(self._values),
            "events": self.events,
            "connected": bool(zk is not None and zk.connected),
        }


def _close(zk: KazooClient) -> None:
    with contextlib.suppress(Exception):
        zk.stop()
    with contextlib.suppress(Exception):
        zk.close()


__all__ = ["ZookeeperConfigStore"]
