"""ZkEntries: a served registry's shared entries (``shared_entries.py``) in ZooKeeper.

Node ``<root>/<service>/<instance id>`` (both names percent-encoded), the document as its data,
followed by every replica through ``ZkTree``. ZooKeeper 3.8 has no TTL nodes unless the server
enables them (``extendedTypesEnabled``), so lapsed registrations are removed as the ZooKeeper
registry's persistent leases are (``leases.py``): each written renewal sets the node again, which
moves its ``mtime`` (the server's clock, never a replica's); one replica, elected with kazoo's
``Election`` on ``<root>-reaper-election``, deletes a node whose ``mtime + removal_after`` has
passed, with the version it read, so a renewal written meanwhile wins. The elected replica picks
candidates from its own cache (the documents' ``renewed_at``, with ``_SKEW_S`` of slack for the
replicas' clocks) and checks each against the server's clock before deleting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import quote, unquote

from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError

from sofamesh.plugins.registries.shared_entries import SharedEntries
from sofamesh.plugins.registries.zookeeper.leases import ZkLeases
from sofamesh.plugins.registries.zookeeper.tree import ZkTree

log = logging.getLogger("sofamesh.pilot.registry.served")
_SKEW_S = 5.0


class ZkEntries(SharedEntries):
    kind = "zookeeper"

    def __init__(
        self,
        registry: str,
        hosts: str,
        root: str,
        fraction: float = 0.5,
        session_timeout_s: float = 10.0,
        reap_interval_s: float = 0.5,
    ) -> None:
        super().__init__(registry, fraction)
        self.hosts = hosts
        self._tree = ZkTree(hosts, root, 2, f"registry {registry!r}", session_timeout_s)
        self.root = self._tree.root
        self._reap_interval = reap_interval_s
        self._reaper: _Reaper | None = None
        self.deadlines: dict[str, float] = {}  # path -> wall-clock time its stored renewal lapses

    def _path(self, service: str, instance_id: str) -> str:
        return f"{self.root}/{quote(service, safe='')}/{quote(instance_id, safe='')}"

    async def _open(self) -> None:
        await self._tree.start(self._changed)
        self._reaper = _Reaper(self, self._reap_interval)
        self._reaper.start()

    async def _close(self) -> None:
        if self._reaper is not None:
            await asyncio.to_thread(self._reaper.stop)
            self._reaper = None
        await self._tree.stop()

    def _changed(self, path: str, value: bytes | None) -> None:
        service, _, instance_id = path[len(self.root) + 1 :].partition("/")
        self.deadlines.pop(path, None)
        doc = self._seen(unquote(service), unquote(instance_id), value)
        ttl = self.removal_after(doc) if doc is not None else None
        if doc is not None and ttl is not None:
            self.deadlines[path] = float(doc.get("renewed_at") or 0.0) + ttl

    async def fence(self) -> None:
        await self._tree.fence()

    async def _write(self, op: str, service: str, instance_id: str, doc: dict[str, Any] | None) -> None:
        path, zk = self._path(service, instance_id), self._tree.client()
        if doc is None:
            await asyncio.to_thread(_delete, zk, path)
            return
        await asyncio.to_thread(_set, zk, path, json.dumps(doc, sort_keys=True).encode())

    def describe(self) -> dict[str, Any]:
        reaper = self._reaper
        return {
            **super().describe(),
            "hosts": self.hosts,
            "root": self.root,
            "zxid": self._tree.zxid,
            "reaper": None if reaper is None else {"elected": reaper.leader, "reaped": reaper.reaped},
        }


def _set(zk: Any, path: str, data: bytes) -> None:
    try:
        zk.set(path, data)
    except NoNodeError:  # new, or reaped meanwhile: the renewal registers it again
        try:
            zk.create(path, data, makepath=True)
        except NodeExistsError:
            zk.set(path, data)


def _delete(zk: Any, path: str) -> None:
    with contextlib.suppress(NoNodeError):
        zk.delete(path)


class _Reaper(ZkLeases):
    """The election, the server's clock and the lead loop of ``ZkLeases``; what it reaps are the
    entries' own nodes."""

    def __init__(self, entries: ZkEntries, interval_s: float) -> None:
        super().__init__(entries._tree.client(), entries.root + "-reaper", entries.identity, interval_s)
        self.entries = entries

    def reap(self) -> list[str]:
        deadlines = list(self.entries.deadlines.items())  # one C-level copy: the event loop changes it
        wall = time.time()
        candidates = [p for p, at in deadlines if at <= wall + _SKEW_S]
        if not candidates:
            return []
        now = self._now_ms()
        gone = []
        for path in candidates:
            try:
                data, stat = self.zk.get(path)
                ttl = self.entries.removal_after(json.loads(data))
                if ttl is None or stat.mtime + ttl * 1000 > now:
                    continue
                self.zk.delete(path, version=stat.version)  # not renewed since we read it
            except (NoNodeError, BadVersionError):
                continue
            except (ValueError, TypeError, AttributeError):
                continue  # not a document; it is reported where it is read
            except KazooException as exc:
                log.info("registry %s: reaping %s: %s", self.entries.registry, path, exc)
                continue
            gone.append(path)
            self.reaped += 1
            log.info("registry %s: %s was not renewed: removed", self.entries.registry, path)
        return gone


__all__ = ["ZkEntries"]
