"""TTL leases of persistent registrations in ZooKeeper, shared by Pilot replicas.

A registration with a TTL gets a lease znode ``<leases_root>/<id>`` whose data names the provider
node and the TTL; a heartbeat through any replica rewrites it, which moves its ``mtime`` (the
server's clock, never a replica's). One replica, elected with kazoo's ``Election`` recipe on
``<leases_root>-election``, reaps: it reads the server's time by touching a clock node, and deletes
the provider node and the lease of every lease whose ``mtime + ttl`` has passed, in one
transaction. When the elected replica goes, its election node goes with its session and another
replica takes over.

Runs on threads of its own (kazoo calls block); nothing here touches the event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from urllib.parse import quote, unquote

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError

log = logging.getLogger("sofamesh.pilot.registry.zookeeper")
_CLOCK = ".clock"


class ZkLeases:
    """Leases under ``root``; ``identifier`` names this replica among the election's contenders."""

    def __init__(self, zk: KazooClient, root: str, identifier: str, interval_s: float = 0.5) -> None:
        self.zk = zk
        self.root = "/" + root.strip("/")
        self.identifier = identifier
        self.interval = interval_s
        self.leader = False
        self.reaped = 0
        self._stop = threading.Event()
        self._election = zk.Election(self.root + "-election", identifier)
        self._thread: threading.Thread | None = None

    def _path(self, key: str) -> str:
        return f"{self.root}/{quote(key, safe='')}"

    # -- any replica -----------------------------------------------------------------------------
    def grant(self, key: str, provider_path: str, ttl_s: float) -> None:
        """Create or replace the lease of ``key`` (the registration's identity)."""
        data = json.dumps({"path": provider_path, "ttl_s": ttl_s}).encode()
        path = self._path(key)
        try:
            self.zk.set(path, data)
        except NoNodeError:
            try:
                self.zk.create(path, data, makepath=True)
            except NodeExistsError:
                self.zk.set(path, data)

    def renew(self, key: str) -> bool:
        """Move the lease's ``mtime`` to now; ``False`` when there is no lease (expired or never)."""
        path = self._path(key)
        try:
            data, stat = self.zk.get(path)
            self.zk.set(path, data, version=stat.version)
        except NoNodeError:
            return False
        except KazooException:  # a concurrent renewal moved the version: the lease is fresh anyway
            return self.zk.exists(path) is not None
        return True

    def release(self, key: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.delete(self._path(key))

    def holds(self, key: str) -> bool:
        return self.zk.exists(self._path(key)) is not None

    # -- the elected replica ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._contend, name="zk-lease-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._election.cancel()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _contend(self) -> None:
        while not self._stop.is_set():
            try:
                self._election.run(self._lead)
            except KazooException as exc:
                log.info("lease election on %s: %s; contending again", self.root, exc)
            self.leader = False
            self._stop.wait(self.interval)

    def _lead(self) -> None:
        self.leader = True
        log.info("lease reaper on %s: elected (%s)", self.root, self.identifier)
        while not self._stop.is_set() and self.zk.connected:
            try:
                self.reap()
            except KazooException as exc:
                log.info("lease reaper on %s: %s", self.root, exc)
            self._stop.wait(self.interval)

    def _now_ms(self) -> int:
        clock = f"{self.root}/{_CLOCK}"
        try:
            stat = self.zk.set(clock, b"")
        except NoNodeError:
            self.zk.create(clock, b"", makepath=True)
            _data, stat = self.zk.get(clock)
        return int(stat.mtime)

    def reap(self) -> list[str]:
        """Delete every registration whose lease ran out; return their keys."""
        now = self._now_ms()
        gone = []
        for child in self.zk.get_children(self.root):
            if child == _CLOCK:
                continue
            path = f"{self.root}/{child}"
            try:
                data, stat = self.zk.get(path)
                lease = json.loads(data)
                deadline = stat.mtime + float(lease["ttl_s"]) * 1000
            except NoNodeError:
                continue
            except (ValueError, KeyError, TypeError):
                log.warning("lease reaper: %s is not a lease; removing it", path)
                with contextlib.suppress(NoNodeError):
                    self.zk.delete(path)
                continue
            if deadline > now:
                continue
            tx = self.zk.transaction()
            tx.check(path, stat.version)  # not renewed since we read it
            tx.delete(path, stat.version)
            if self.zk.exists(lease["path"]) is not None:
                tx.delete(lease["path"])
            if all(r is True for r in tx.commit()):
                gone.append(unquote(child))
                self.reaped += 1
                log.info("lease of %s ran out: removed %s", unquote(child), lease["path"])
        return gone


__all__ = ["ZkLeases"]
