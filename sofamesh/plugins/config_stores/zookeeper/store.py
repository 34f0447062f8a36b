"""The ``zookeeper`` config store: each resource a JSON znode at ``<root>/<group>/<kind>/<namespace>/<name>``
in ZooKeeper, so every Pilot replica pointed at the same root serves the same policy.

The subtree is followed by ``ZkTree`` (``plugins/registries/zookeeper/tree.py``: kazoo's
``TreeCache``, values ordered by their nodes' (czxid, mzxid), and the fence that ``sync()``s and
reads the subtree). A value someone else wrote that is not JSON is kept as a broken document for
its key: the resource's last accepted version keeps serving and the problem is reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from sofamesh.core.errors import PluginError
from sofamesh.pilot.policy.resource import Resource, ResourceKey
from sofamesh.pilot.policy.store import Changed, ConfigStore, StoredDocument, json_documents
from sofamesh.plugins.registries.zookeeper.tree import ZkTree

log = logging.getLogger("sofamesh.pilot.config_store.zookeeper")


class ZookeeperConfigStore(ConfigStore):
    writable = True

    def __init__(self, name: str, hosts: str, root: str = "/sofamesh/policy", session_timeout_s: float = 10.0) -> None:
        self.name = name
        self.hosts = hosts
        self.root = "/" + root.strip("/")
        self._changed: Changed = lambda: None
        self._tree = ZkTree(hosts, self.root, 4, f"config store {name!r}", session_timeout_s)

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
        await self._tree.start(lambda path, value: self._changed())
        self._changed = changed

    async def stop(self) -> None:
        await self._tree.stop()

    @property
    def zxid(self) -> int:
        return self._tree.zxid

    async def fence(self) -> None:
        """``sync()`` the root, read the subtree, and take what is newer than what is held."""
        await self._tree.fence()

    # -- reads and writes ----------------------------------------------------------------------
    def documents(self) -> Sequence[StoredDocument]:
        return json_documents(self._tree.values, "zookeeper", self._parse_path)

    async def put(self, resource: Resource) -> None:
        path = self._path(resource.key)
        value = json.dumps(resource.to_dict(), sort_keys=True).encode()
        zk = self._tree.client()

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
        self._tree.hold(path, value, (stat.czxid, stat.mzxid))  # a read right after sees it; the watch agrees later

    async def delete(self, key: ResourceKey) -> bool:
        path = self._path(key)
        zk = self._tree.client()
        try:
            await asyncio.to_thread(zk.delete, path)
            existed = True
        except NoNodeError:
            existed = False
        except (KazooException, OSError) as exc:
            raise PluginError(f"config store {self.name!r}: cannot delete {path}: {exc}") from exc
        self._tree.hold(path, None, self._tree.version(path))
        return existed

    def describe(self) -> dict[str, Any]:
        zk = self._tree.zk
        return {
            "type": "zookeeper",
            "hosts": self.hosts,
            "root": self.root,
            "zxid": self._tree.zxid,
            "keys": len(self._tree.values),
            "events": self._tree.events,
            "fences": self._tree.fences,
            "connected": bool(zk is not None and zk.connected),
        }


__all__ = ["ZookeeperConfigStore"]
