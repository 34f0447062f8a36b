"""The ``zookeeper`` registry: reads, watches and writes one ZooKeeper layout (Dubbo or SOFA RPC).

kazoo runs its own thread; its watch and session callbacks only hand paths to the event loop, where
one task re-reads dirty paths (blocking kazoo calls run on a worker thread). Every read re-arms its
watch, and every (re)connection re-reads everything, so a lost session loses no change.

During an outage the cache is kept (``stale`` is true) instead of being emptied. Our own provider
nodes are ephemeral; after a session loss they are created again. With ``persistent`` (Pilot
replicas sharing the tree) a registration is a persistent node (``dynamic=false``, as Dubbo writes
one) that outlives the replica that took it; a TTL is a lease in ``leases.py`` that any replica
renews and one elected replica reaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import Callback, KazooState, WatchedEvent

from sofamesh.core.errors import PluginError
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.registry import Notify, Registry
from sofamesh.plugins.registries.zookeeper import urls
from sofamesh.plugins.registries.zookeeper.leases import ZkLeases

log = logging.getLogger("sofamesh.pilot.registry.zookeeper")
_RESCAN = "*"  # a dirty-set marker: re-read the whole tree


class ZookeeperRegistry(Registry):
    """``layout`` is ``dubbo`` or ``sofa``; ``root`` defaults to ``/dubbo`` or ``/sofa-rpc``."""

    writable = True

    def __init__(self, name: str, hosts: str, layout: str = "dubbo", root: str | None = None,
                 session_timeout_s: float = 10.0, application: str = "sofamesh", persistent: bool = False,
                 leases_root: str | None = None) -> None:
        if layout not in urls.LAYOUTS:
            raise PluginError(f"registry {name!r}: unknown layout {layout!r} (known: {', '.join(urls.LAYOUTS)})")
        self.name = name
        self.hosts = hosts
        self.layout = layout
        self.root = "/" + (root if root is not None else urls.DEFAULT_ROOTS[layout]).strip("/")
        self.application = application
        self.persistent = persistent
        self.leases_root = leases_root or f"/sofamesh-leases{self.root}"
        self.leases: ZkLeases | None = None
        self._session_timeout = session_timeout_s
        self._zk: KazooClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notify: Notify = lambda names: None
        self._services: dict[str, Service] = {}
        # service -> instance id -> (instance, node path)
        self._instances: dict[str, dict[str, tuple[ServiceInstance, str]]] = {}
        self._interfaces: set[str] = set()
        self._by_interface: dict[str, frozenset[str]] = {}  # interface -> service names under it
        self._owned: dict[tuple[str, str], tuple[str, bytes]] = {}  # (service, id) -> (path, data)
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._passes: list[asyncio.Future[None]] = []  # fences waiting for the next pass of _work
        self.fences = 0
        self._worker: asyncio.Task[None] | None = None
        self.stale = True
        self.connected = False
        self.sessions = 0
        self.scans = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, notify: Notify) -> None:
        self._loop = asyncio.get_running_loop()
        self._zk = KazooClient(hosts=self.hosts, timeout=self._session_timeout,
                               connection_retry={"max_tries": -1, "max_delay": 1.0},
                               command_retry={"max_tries": 3, "max_delay": 1.0})
        self._zk.add_listener(self._on_state)
        await asyncio.to_thread(self._zk.start, self._session_timeout)
        self.connected = True
        self.sessions = 1
        await asyncio.to_thread(self._scan_all)
        self.stale = False
        if self.persistent:
            self.leases = ZkLeases(self._zk, self.leases_root, f"{socket.gethostname()}-{os.getpid()}")
            self.leases.start()
        self._notify = notify
        self._worker = self._loop.create_task(self._work())
        if self._services:
            notify(list(self._services))

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self.leases is not None:
            await asyncio.to_thread(self.leases.stop)
            self.leases = None
        if self._zk is not None:
            zk, self._zk = self._zk, None
            zk.remove_listener(self._on_state)
            await asyncio.to_thread(_close, zk)

    # -- kazoo thread -> loop ------------------------------------------------------------------
    def _on_state(self, state: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._state_changed, state)

    def _state_changed(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            log.info("registry %s: connected to ZooKeeper, re-reading %s", self.name, self.root)
            self.connected = True
            self.sessions += 1
            self._mark(_RESCAN)
        else:
            if state == KazooState.LOST:
                log.warning("registry %s: ZooKeeper session lost; keeping the last known instances", self.name)
            self.connected = False
            self.stale = True

    def _on_watch(self, event: WatchedEvent) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and event.path:
            loop.call_soon_threadsafe(self._mark, event.path)

    def _mark(self, path: str) -> None:
        self._dirty.add(path)
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            passes, self._passes = self._passes, []
            try:
                if _RESCAN in dirty:
                    await asyncio.to_thread(self._restore_owned, list(self._owned.values()))
                    changed = await asyncio.to_thread(self._scan_all)
                    self.stale = False
                else:
                    changed = await asyncio.to_thread(self._scan_paths, dirty)
            except KazooException as exc:  # connection dropped mid-scan: try again on reconnect
                log.info("registry %s: scan interrupted (%s)", self.name, exc)
                self._dirty |= dirty
                self._passes = passes + self._passes
                await asyncio.sleep(0.2)
                if self.connected:
                    self._wake.set()
                continue
            if changed:
                self._notify(changed)
            for fut in passes:
                if not fut.done():
                    fut.set_result(None)

    async def fence(self) -> None:
        """``sync()`` the root, so every watch event for a change made before now has reached us
        (ZooKeeper sends a session's watch events in order, before later replies); let kazoo's
        callback thread hand them to the loop; then wait for the pass that re-reads their paths."""
        zk = self._zk
        loop = self._loop
        if zk is None or loop is None:
            return
        self.fences += 1
        try:
            await asyncio.to_thread(zk.sync, self.root)
        except KazooException as exc:
            raise PluginError(f"registry {self.name!r}: sync of {self.root} failed: {exc}") from exc
        handed: asyncio.Future[None] = loop.create_future()

        def handed_over() -> None:
            if not handed.done():
                handed.set_result(None)

        def done() -> None:  # after every watch callback queued before it (one FIFO callback thread)
            loop.call_soon_threadsafe(handed_over)

        zk.handler.dispatch_callback(Callback("fence", done, ()))
        await handed
        pass_done: asyncio.Future[None] = loop.create_future()
        self._passes.append(pass_done)
        self._wake.set()
        await pass_done

    # -- reading (worker thread) ---------------------------------------------------------------
    def _providers_path(self, interface: str) -> str:
        return f"{self.root}/{urls.java_encode(interface)}/providers"

    def _scan_all(self) -> set[str]:
        assert self._zk is not None
        self.scans += 1
        children = self._children(self.root)
        interfaces = {urls.java_decode(c) for c in children or ()} - {"mapping", "config", "metadata"}
        changed: set[str] = set()
        for gone in self._interfaces - interfaces:
            changed |= self._apply_interface(gone, {}, {})
        self._interfaces = interfaces
        for interface in sorted(interfaces):
            changed |= self._scan_interface(interface)
        return changed

    def _children(self, path: str) -> list[str] | None:
        """The children of ``path`` with a child watch; ``None`` (and a watch for its creation) when
        it does not exist. A node created between the two calls is read, not missed."""
        assert self._zk is not None
        while True:
            try:
                children: list[str] = self._zk.get_children(path, watch=self._on_watch)
                return children
            except NoNodeError:
                if self._zk.exists(path, watch=self._on_watch) is None:
                    return None

    def _scan_paths(self, paths: set[str]) -> set[str]:
        changed: set[str] = set()
        for path in sorted(paths):
            if path == self.root:
                changed |= self._scan_all()
                continue
            rest = path[len(self.root) + 1:].split("/")
            if path.startswith(self.root + "/") and rest:
                changed |= self._scan_interface(urls.java_decode(rest[0]))
        return changed

    def _scan_interface(self, interface: str) -> set[str]:
        assert self._zk is not None
        path = self._providers_path(interface)
        children = self._children(path)
        if children is None:
            return self._apply_interface(interface, {}, {})
        found: dict[str, dict[str, tuple[ServiceInstance, str]]] = {}
        services: dict[str, Service] = {}
        overrides: list[urls.ProviderUrl] = []
        if self.layout == "dubbo":
            configurators = self._children(f"{self.root}/{urls.java_encode(interface)}/configurators") or []
            overrides = [o for o in map(urls.parse_override, configurators) if o is not None]
        for child in sorted(children):
            data = b""
            if self.layout == "sofa":
                try:
                    data, _stat = self._zk.get(f"{path}/{child}")
                except NoNodeError:
                    continue
            parsed = urls.from_node(self.layout, child, data)
            if parsed is None:
                continue
            svc, inst = parsed
            if urls.interface_of(svc.name) != interface:
                continue
            inst = ServiceInstance.from_dict({**inst.to_dict(), "origin": self.name})
            if overrides:
                inst = urls.apply_overrides(inst, overrides)
            insts = found.setdefault(svc.name, {})
            if inst.id not in insts:
                insts[inst.id] = (inst, f"{path}/{child}")
                services.setdefault(svc.name, svc)
        return self._apply_interface(interface, found, services)

    def _apply_interface(self, interface: str, found: dict[str, dict[str, tuple[ServiceInstance, str]]],
                         services: dict[str, Service]) -> set[str]:
        """Install the instances read for one interface (one service per name found under it: the
        SOFA layout names a service ``interface:version``); return the names whose view changed.

        Runs on the scan thread while the event loop reads: the dicts are replaced, never changed
        in place (copy on write), so a reader always iterates a complete, unchanging dict.
        """
        old_names = self._by_interface.get(interface, frozenset())
        new_names = frozenset(found)
        changed = set(old_names - new_names)
        for name in new_names:
            old_view = {i: inst for i, (inst, _p) in self._instances.get(name, {}).items()}
            if old_view != {i: inst for i, (inst, _p) in found[name].items()}:
                changed.add(name)
        if not changed and old_names == new_names:
            return set()
        instances = {k: v for k, v in self._instances.items() if k not in old_names}
        instances.update(found)
        svcs = {k: v for k, v in self._services.items() if k not in old_names or k in new_names}
        for name in new_names:
            svcs.setdefault(name, services[name])
        self._instances, self._services = instances, svcs
        self._by_interface = {**self._by_interface, interface: new_names}
        return changed

    # -- reads ---------------------------------------------------------------------------------
    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return tuple(inst for inst, _p in self._instances.get(service, {}).values())

    def describe(self) -> dict[str, Any]:
        return {"type": "zookeeper", "hosts": self.hosts, "layout": self.layout, "root": self.root,
                "stale": self.stale, "connected": self.connected, "sessions": self.sessions,
                "scans": self.scans, "fences": self.fences, "owned": len(self._owned), "persistent": self.persistent,
                "lease_reaper": None if self.leases is None else
                {"root": self.leases_root, "elected": self.leases.leader, "reaped": self.leases.reaped}}

    # -- writes --------------------------------------------------------------------------------
    async def register(self, service: Service, instance: ServiceInstance,
                       ttl_seconds: float | None = None) -> None:
        """Create a provider node for ``instance``: ephemeral (it lives as long as our session;
        ``ttl_seconds`` does not apply), or with ``persistent`` one that stays until deregistered or,
        with ``ttl_seconds``, until its lease runs out."""
        if instance.service != service.name:
            raise PluginError(f"instance {instance.id!r} names service {instance.service!r}, not {service.name!r}")
        url, data = urls.to_url(self.layout, service, instance, application=self.application, pid=os.getpid(),
                                dynamic=not self.persistent)
        path = f"{self._providers_path(urls.interface_of(service.name))}/{urls.node_name(url)}"
        key = (service.name, instance.id)
        old = self._owned.get(key)
        if old is None:
            cached = self._instances.get(service.name, {}).get(instance.id)
            old = (cached[1], b"") if cached else None
        if not self.persistent:
            self._owned[key] = (path, data)
        try:
            await asyncio.to_thread(self._replace, old[0] if old else None, path, data)
            if self.leases is not None:
                lease = f"{service.name}/{instance.id}"
                if ttl_seconds:
                    await asyncio.to_thread(self.leases.grant, lease, path, ttl_seconds)
                else:
                    await asyncio.to_thread(self.leases.release, lease)
        except KazooException as exc:
            raise PluginError(f"registry {self.name!r}: cannot write {service.name}/{instance.id}: {exc}") from exc

    def _replace(self, old_path: str | None, path: str, data: bytes) -> None:
        assert self._zk is not None
        if old_path is not None and old_path != path:
            with contextlib.suppress(NoNodeError):
                self._zk.delete(old_path)
        self._zk.ensure_path(path.rsplit("/", 1)[0])
        try:
            self._zk.create(path, data, ephemeral=not self.persistent)
        except NodeExistsError:
            self._zk.set(path, data)

    async def deregister(self, service: str, instance_id: str) -> bool:
        owned = self._owned.pop((service, instance_id), None)
        cached = self._instances.get(service, {}).get(instance_id)
        paths = {p for p in (owned[0] if owned else None, cached[1] if cached else None) if p}
        if not paths:
            return False
        try:
            await asyncio.to_thread(self._delete, paths)
            if self.leases is not None:
                await asyncio.to_thread(self.leases.release, f"{service}/{instance_id}")
        except KazooException as exc:
            raise PluginError(f"registry {self.name!r}: cannot delete {service}/{instance_id}: {exc}") from exc
        return True

    def _delete(self, paths: set[str]) -> None:
        assert self._zk is not None
        for path in paths:
            with contextlib.suppress(NoNodeError):
                self._zk.delete(path)

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        known = (service, instance_id) in self._owned or instance_id in self._instances.get(service, {})
        if not known or self.leases is None:
            return known
        leases = self.leases
        try:
            lease = f"{service}/{instance_id}"
            return await asyncio.to_thread(lambda: leases.renew(lease) or not leases.holds(lease))
        except KazooException as exc:
            raise PluginError(f"registry {self.name!r}: cannot renew {service}/{instance_id}: {exc}") from exc

    def _restore_owned(self, owned: list[tuple[str, bytes]]) -> None:
        """After a (re)connection: create again every node of ours that is missing (session loss)."""
        assert self._zk is not None
        session = self._zk.client_id[0] if self._zk.client_id else None
        for path, data in owned:
            stat = self._zk.exists(path)
            if stat is not None and stat.ephemeralOwner == session:
                continue
            if stat is not None:  # left by our expired session; ZooKeeper would delete it later
                with contextlib.suppress(NoNodeError):
                    self._zk.delete(path)
            self._zk.ensure_path(path.rsplit("/", 1)[0])
            with contextlib.suppress(NodeExistsError):
                self._zk.create(path, data, ephemeral=True)
            log.info("registry %s: re-created %s", self.name, path)


def _close(zk: KazooClient) -> None:
    zk.stop()
    zk.close()


__all__ = ["ZookeeperRegistry"]
