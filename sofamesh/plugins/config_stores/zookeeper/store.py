"""The ``zookeeper`` config store: each resource a JSON znode at ``<root>/<group>/<kind>/<namespace>/<name>``
in ZooKeeper, so every Pilot replica pointed at the same root serves the same policy.

kazoo's ``TreeCache`` recipe keeps the subtree current (its watches are re-armed on every read and
after a reconnection); its events, delivered on kazoo's thread, are handed to the event loop, which
owns the documents. A value someone else wrote that is not JSON is kept as a broken document for its
key: the resource's last accepted version keeps serving and the problem is reported.

A fence (a proxy just connected to this replica) cannot wait on ``TreeCache`` (it reads a new node
one level per round trip, so a later write can be delivered before an earlier one): it ``sync()``s
the root and reads the subtree itself. Every value then carries its node's (czxid, mzxid), and a
``TreeCache`` event older than what the fence read is dropped, so the documents never go back.
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
from kazoo.protocol.states import ZnodeStat
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
        self.fences = 0
        self._versions: dict[str, tuple[int, int]] = {}  # path -> (czxid, mzxid) of the value held
        self._gone: dict[str, int] = {}  # path a fence found absent -> zxid it was known absent at

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
            stat = data.stat
            self._loop.call_soon_threadsafe(
                self._apply,
                data.path,
                None if removed else (data.data or b""),
                (stat.czxid, stat.mzxid) if stat is not None else (0, 0),
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

    def _apply(self, path: str, value: bytes | None, version: tuple[int, int]) -> None:
        if self._parse_path(path) is None:
            return  # a group, kind or namespace node
        self.events += 1
        if self._hold(path, value, version):
            self._changed()

    def _hold(self, path: str, value: bytes | None, version: tuple[int, int]) -> bool:
        """Take ``value`` (``None``: the node is gone) unless what is held is newer; True if it changed."""
        held = self._versions.get(path)
        if value is None:
            if held is not None and version[0] < held[0]:
                return False  # a later incarnation of the node is held
            self._versions.pop(path, None)
            return self._values.pop(path, None) is not None
        if held is not None and version < held:
            return False
        gone = self._gone.get(path)
        if gone is not None:
            if version[0] <= gone:
                return False  # created before a fence saw it deleted
            del self._gone[path]
        self.zxid = max(self.zxid, version[1])
        self._versions[path] = version
        if self._values.get(path) == value:
            return False
        self._values[path] = value
        return True

    async def fence(self) -> None:
        """``sync()`` the root, read the subtree, and take what is newer than what is held."""
        zk = self._client()
        self.fences += 1
        try:
            await asyncio.to_thread(zk.sync, self.root)
            found, dirs = await asyncio.to_thread(self._read_tree, zk)
        except (KazooException, OSError) as exc:
            raise PluginError(f"config store {self.name!r}: fence read of {self.root} failed: {exc}") from exc
        changed = False
        for path, (value, version) in found.items():
            changed = self._hold(path, value, version) or changed
        for path in [p for p in self._values if p not in found]:
            absent_at = _deepest(dirs, path)
            held = self._versions.get(path, (0, 0))
            if held[0] > absent_at:
                continue  # created after the fence read its directory
            self._gone[path] = absent_at
            changed = self._hold(path, None, (held[0], absent_at)) or changed
        if changed:
            self._changed()

    def _read_tree(self, zk: KazooClient) -> tuple[dict[str, tuple[bytes, tuple[int, int]]], dict[str, int]]:
        """Every resource node under the root with its (czxid, mzxid), and each directory's pzxid."""
        found: dict[str, tuple[bytes, tuple[int, int]]] = {}
        dirs: dict[str, int] = {}

        def walk(path: str, depth: int) -> None:
            try:
                if depth == 4:
                    data, stat = zk.get(path)
                    found[path] = (data or b"", (stat.czxid, stat.mzxid))
                    return
                children, stat = zk.get_children(path, include_data=True)
            except NoNodeError:
                return
            dirs[path] = stat.pzxid
            for child in children:
                walk(f"{path}/{child}", depth + 1)

        walk(self.root, 0)
        return found, dirs

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

        def write() -> ZnodeStat:
            try:
                stat: ZnodeStat = zk.set(path, value)
            except NoNodeError:
                try:
                    _path, stat = zk.create(path, value, makepath=True, include_data=True)
                except NodeExistsError:  # another replica created it meanwhile: ours is the later write
                    stat = zk.set(path, value)
            return stat

        try:
            stat = await asyncio.to_thread(write)
        except (KazooException, OSError) as exc:
            raise PluginError(f"config store {self.name!r}: cannot write {path}: {exc}") from exc
        if self._hold(path, value, (stat.czxid, stat.mzxid)):  # a read right after sees it; the watch agrees later
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
        if self._hold(path, None, self._versions.get(path, (0, 0))):
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
            "fences": self.fences,
            "connected": bool(zk is not None and zk.connected),
        }


def _deepest(dirs: dict[str, int], path: str) -> int:
    """The pzxid of the deepest directory above ``path`` that a fence read (0: none)."""
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        if path in dirs:
            return dirs[path]
    return 0


def _close(zk: KazooClient) -> None:
    with contextlib.suppress(Exception):
        zk.stop()
    with contextlib.suppress(Exception):
        zk.close()


__all__ = ["ZookeeperConfigStore"]
