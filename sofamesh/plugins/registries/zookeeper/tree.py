"""ZkTree: every node at one depth under a ZooKeeper root, read and followed for the caches Pilot keeps
of ZooKeeper subtrees: the ZooKeeper config store and the served registries' shared entries.

kazoo's ``TreeCache`` recipe keeps the subtree current (its watches are re-armed on every read and
after a reconnection); its events, delivered on kazoo's thread, are handed to the event loop, which
owns the values. A fence (a proxy just connected to this replica) cannot wait on ``TreeCache`` (it
reads a new node one level per round trip, so a later write can be delivered before an earlier
one): it ``sync()``s the root and reads the subtree itself. Every value carries its node's
(czxid, mzxid), and an event older than what is held is dropped, so the values never go back.
What the values mean stays with the caller, told of each change through ``changed(path, value)``
(``None``: the node is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.recipe.cache import TreeCache, TreeEvent

from sofamesh.core.errors import PluginError

Version = tuple[int, int]
"""(czxid, mzxid) of a node: which incarnation, and which change of it."""
Changed = Callable[[str, "bytes | None"], object]


def connect(hosts: str, timeout: float) -> KazooClient:
    """A kazoo client retrying its connection forever (a Pilot outlives a ZooKeeper restart)."""
    return KazooClient(
        hosts=hosts,
        timeout=timeout,
        connection_retry={"max_tries": -1, "max_delay": 1.0},
        command_retry={"max_tries": 3, "max_delay": 1.0},
    )


def close(zk: KazooClient) -> None:
    with contextlib.suppress(Exception):
        zk.stop()
    with contextlib.suppress(Exception):
        zk.close()


class ZkTree:
    """The nodes ``depth`` levels under ``root`` (the leaves); ``what`` names the owner in errors."""

    def __init__(self, hosts: str, root: str, depth: int, what: str, session_timeout_s: float = 10.0) -> None:
        self.hosts = hosts
        self.root = "/" + root.strip("/")
        self.depth = depth
        self.what = what
        self.timeout = session_timeout_s
        self.zk: KazooClient | None = None
        self.values: dict[str, bytes] = {}
        self.zxid = 0  # the largest modification zxid seen: the store's own order of changes
        self.events = 0
        self.fences = 0
        self._changed: Changed = lambda path, value: None
        self._cache: TreeCache | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._versions: dict[str, Version] = {}  # path -> (czxid, mzxid) of the value held
        self._gone: dict[str, int] = {}  # path a fence found absent -> zxid it was known absent at

    def is_leaf(self, path: str) -> bool:
        return path.startswith(self.root + "/") and path[len(self.root) + 1 :].count("/") == self.depth - 1

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, changed: Changed) -> None:
        """Connect, read the subtree (``changed`` for each leaf), then follow it."""
        self._loop = asyncio.get_running_loop()
        self._changed = changed
        zk = connect(self.hosts, self.timeout)
        try:
            await asyncio.to_thread(zk.start, self.timeout)
            await asyncio.to_thread(zk.ensure_path, self.root)
        except (KazooException, OSError) as exc:
            await asyncio.to_thread(close, zk)
            raise PluginError(f"{self.what}: ZooKeeper at {self.hosts} is unreachable: {exc}") from exc
        self.zk = zk
        ready = threading.Event()
        cache = TreeCache(zk, self.root)

        def on_event(event: TreeEvent) -> None:  # kazoo's thread
            if event.event_type == TreeEvent.INITIALIZED:
                ready.set()
                return
            data = event.event_data
            loop = self._loop
            if data is None or loop is None or loop.is_closed():
                return
            removed = event.event_type == TreeEvent.NODE_REMOVED
            stat = data.stat
            version = (stat.czxid, stat.mzxid) if stat is not None else (0, 0)
            loop.call_soon_threadsafe(self._event, data.path, None if removed else (data.data or b""), version)

        cache.listen(on_event)
        cache.start()
        self._cache = cache
        if not await asyncio.to_thread(ready.wait, self.timeout):
            await self.stop()
            raise PluginError(f"{self.what}: could not read {self.root} within {self.timeout:.0f} s")
        await asyncio.sleep(0)  # let the events queued before INITIALIZED run

    async def stop(self) -> None:
        if self._cache is not None:
            cache, self._cache = self._cache, None
            cache.close()
        if self.zk is not None:
            zk, self.zk = self.zk, None
            await asyncio.to_thread(close, zk)

    def client(self) -> KazooClient:
        if self.zk is None:
            raise PluginError(f"{self.what} is not started")
        return self.zk

    # -- values --------------------------------------------------------------------------------
    def _event(self, path: str, value: bytes | None, version: Version) -> None:
        if not self.is_leaf(path):
            return  # a directory node
        self.events += 1
        self.hold(path, value, version)

    def version(self, path: str) -> Version:
        return self._versions.get(path, (0, 0))

    def hold(self, path: str, value: bytes | None, version: Version) -> bool:
        """Take ``value`` (``None``: the node is gone) unless what is held is newer; ``changed`` and
        True when it changed."""
        if self._take(path, value, version):
            self._changed(path, value)
            return True
        return False

    def _take(self, path: str, value: bytes | None, version: Version) -> bool:
        held = self._versions.get(path)
        if value is None:
            if held is not None and version[0] < held[0]:
                return False  # a later incarnation of the node is held
            self._versions.pop(path, None)
            return self.values.pop(path, None) is not None
        if held is not None and version < held:
            return False
        gone = self._gone.get(path)
        if gone is not None:
            if version[0] <= gone:
                return False  # created before a fence saw it deleted
            del self._gone[path]
        self.zxid = max(self.zxid, version[1])
        self._versions[path] = version
        if self.values.get(path) == value:
            return False
        self.values[path] = value
        return True

    async def fence(self) -> None:
        """``sync()`` the root, read the subtree, and take what is newer than what is held."""
        zk = self.client()
        self.fences += 1
        try:
            await asyncio.to_thread(zk.sync, self.root)
            found, dirs = await asyncio.to_thread(self._read_tree, zk)
        except (KazooException, OSError) as exc:
            raise PluginError(f"{self.what}: fence read of {self.root} failed: {exc}") from exc
        for path, (value, version) in found.items():
            self.hold(path, value, version)
        for path in [p for p in self.values if p not in found]:
            absent_at = _deepest(dirs, path)
            held = self._versions.get(path, (0, 0))
            if held[0] > absent_at:
                continue  # created after the fence read its directory
            self._gone[path] = absent_at
            self.hold(path, None, (held[0], absent_at))

    def _read_tree(self, zk: KazooClient) -> tuple[dict[str, tuple[bytes, Version]], dict[str, int]]:
        """Every leaf under the root with its (czxid, mzxid), and each directory's pzxid."""
        found: dict[str, tuple[bytes, Version]] = {}
        dirs: dict[str, int] = {}

        def walk(path: str, depth: int) -> None:
            try:
                if depth == self.depth:
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


def _deepest(dirs: dict[str, int], path: str) -> int:
    """The pzxid of the deepest directory above ``path`` that a fence read (0: none)."""
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        if path in dirs:
            return dirs[path]
    return 0


__all__ = ["Changed", "Version", "ZkTree", "close", "connect"]
