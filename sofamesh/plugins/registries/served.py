"""ServedRegistry: the instances that one registry API's clients (Eureka, Nacos, Consul) registered
with Pilot, kept in memory with the liveness each of those registries defines.

Owns the entries, their two deadlines (``unhealthy_at``: the instance stays but is no longer
routed to; ``remove_at``: it is dropped) and the reaper that enforces them. It does not parse any
wire format: the ``api.py`` of each registry turns requests into :class:`Entry` objects through
its ``mapping.py``. Nothing is persisted by default: like the real servers' ephemeral
registrations, a client whose renew or beat is refused registers again. With ``shared`` (Pilot
replicas) the entries live in etcd or ZooKeeper as well (``shared_entries.py``): every replica lists
what any of them took, and a renewal through any of them keeps it alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from aiohttp import web

from sofamesh.core.errors import PluginError
from sofamesh.pilot.config import split_address
from sofamesh.pilot.model import Health, MeshModel, Service, ServiceInstance
from sofamesh.pilot.registry import Notify, Registry
from sofamesh.plugins.registries.etcd.entries import EtcdEntries
from sofamesh.plugins.registries.shared_entries import SharedEntries
from sofamesh.plugins.registries.zookeeper.entries import ZkEntries

log = logging.getLogger("sofamesh.pilot.registry.served")
_NEVER = float("inf")


@dataclass(slots=True)
class Entry:
    """One registered instance: what the model sees, and what its API keeps to answer its clients.

    ``lease_s`` is how long one renewal keeps it healthy (``None``: no lease); ``remove_after_s``
    how long after its last renewal it is dropped (``None``: kept while unhealthy).
    ``wire`` is the API's own record of the registration (the Eureka instance document, the Consul
    service definition and checks), so the API answers its clients with what they sent.
    """

    service: Service
    instance: ServiceInstance
    lease_s: float | None = None
    remove_after_s: float | None = None
    wire: dict[str, Any] = field(default_factory=dict)
    unhealthy_at: float = _NEVER
    remove_at: float = _NEVER
    lapsed: bool = False
    registered_at: float = 0.0
    renewed_at: float = 0.0


class ServedRegistry(Registry):
    """A read-only registry (from the Open Service Registry API's side) filled by an API's clients."""

    kind = "served"

    def __init__(self, name: str, model: MeshModel | None, reap_interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, address: str | None = None) -> None:
        self.name = name
        self.address = address
        """``HOST:PORT`` of a listener of its own (the port the API's clients assume), or ``None``."""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.mesh = model if model is not None else MeshModel([self])
        self._clock = clock
        self._reap_interval = reap_interval
        self._services: dict[str, Service] = {}
        self._entries: dict[str, dict[str, Entry]] = {}
        self._notify: Notify = lambda names: None
        self._reaper: asyncio.Task[None] | None = None
        self.expired = 0
        self.shared: SharedEntries | None = None

    def share(self, options: Mapping[str, Any] | None) -> None:
        """``shared`` option: ``{type: etcd, endpoint, prefix}`` (default prefix
        ``/sofamesh/served/<registry name>/``) or ``{type: zookeeper, hosts, root}`` (default root
        ``/sofamesh/served/<registry name>``), and ``renew_write_fraction`` (``shared_entries.py``);
        ``None`` keeps the entries in this process only."""
        if not options:
            return
        from sofamesh.core.errors import ConfigError
        from sofamesh.pilot.options import check_options

        where = f"registries.{self.name}.options.shared"
        kind = options.get("type", "etcd")
        keys = {"etcd": ("endpoint", "prefix"), "zookeeper": ("hosts", "root")}.get(str(kind))
        if keys is None:
            raise ConfigError(f"{where}.type", f"{kind!r}: served registrations are shared through etcd or zookeeper")
        opts = check_options(options, ("type", *keys, "renew_write_fraction"), where, f"registry {self.name!r}")
        fraction = opts.get("renew_write_fraction", 0.5)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ConfigError(f"{where}.renew_write_fraction", f"{fraction!r}: a number from 0 (every renewal "
                              "written) up to, not including, 1")
        default = f"/sofamesh/served/{self.name}"
        if kind == "etcd":
            self.shared = EtcdEntries(self.name, str(opts.get("endpoint", "http://127.0.0.1:2379")),
                                      str(opts.get("prefix", default + "/")), float(fraction))
            return
        hosts = opts.get("hosts")
        if not isinstance(hosts, str) or not hosts:
            raise ConfigError(f"{where}.hosts", 'required with type zookeeper: "HOST:PORT[,HOST:PORT]"')
        self.shared = ZkEntries(self.name, hosts, str(opts.get("root", default)), float(fraction))

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, notify: Notify) -> None:
        if self.shared is not None:
            await self.shared.start(self._shared_event)
        self._notify = notify
        if self._services:
            notify(list(self._services))
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        if self.address is not None:
            await self._listen(self.address)

    def own_routes(self) -> list[web.AbstractRouteDef]:
        """The routes served on the registry's own port (``address``)."""
        return []

    async def _listen(self, address: str) -> None:
        host, port = split_address(address, f"registries.{self.name}.options.address")
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_routes(self.own_routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise PluginError(f"registry {self.name!r}: cannot listen on {address}: {exc}") from exc
        self.port = int(self._runner.addresses[0][1])
        log.info("registry %s: serving its clients on %s:%d", self.name, host, self.port)

    async def stop(self) -> None:
        if self.shared is not None:
            await self.shared.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    # -- reads ---------------------------------------------------------------------------------
    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return tuple(self.effective(e) for e in self._entries.get(service, {}).values())

    def entry(self, service: str, instance_id: str) -> Entry | None:
        return self._entries.get(service, {}).get(instance_id)

    def entries(self) -> Iterable[Entry]:
        for by_id in self._entries.values():
            yield from by_id.values()

    async def fence(self) -> None:
        if self.shared is not None:
            await self.shared.fence()

    def describe(self) -> dict[str, Any]:
        now = self._clock()
        return {"type": self.kind, "expired": self.expired,
                "shared": self.shared.describe() if self.shared is not None else None,
                "leases": {f"{e.service.name}/{e.instance.id}": {
                    "unhealthy_in_s": None if e.unhealthy_at == _NEVER else round(e.unhealthy_at - now, 3),
                    "removed_in_s": None if e.remove_at == _NEVER else round(e.remove_at - now, 3)}
                    for e in self.entries()}}

    # -- writes (by the API; synchronous: nothing waits on a disk) -----------------------------
    def put(self, entry: Entry) -> None:
        """Add or replace an instance; its lease starts now."""
        now = self._clock()
        old = self.entry(entry.service.name, entry.instance.id)
        entry.registered_at = old.registered_at if old is not None else now
        self._arm(entry, now)
        self._services[entry.service.name] = entry.service
        self._entries.setdefault(entry.service.name, {})[entry.instance.id] = entry
        self._notify([entry.service.name])
        if self.shared is not None:
            self.shared.put(entry.service.name, entry.instance.id, self._document(entry))

    def remove(self, service: str, instance_id: str) -> Entry | None:
        by_id = self._entries.get(service)
        if by_id is None or instance_id not in by_id:
            return None
        entry = by_id.pop(instance_id)
        if not by_id:
            del self._entries[service]
            del self._services[service]
        self._notify([service])
        if self.shared is not None:
            self.shared.remove(service, instance_id)
        return entry

    def renew(self, service: str, instance_id: str) -> Entry | None:
        """Restart the lease; an instance that had lapsed is healthy again. ``None`` when unknown."""
        entry = self.entry(service, instance_id)
        if entry is None:
            return None
        was_lapsed = entry.lapsed
        # a shared entry's renewal time may be the latest one its stored copy allows (slack)
        self._arm(entry, max(self._clock(), entry.renewed_at))
        if was_lapsed:
            self._notify([service])
        if self.shared is not None:
            self.shared.renew(service, instance_id, self._document(entry))
        return entry

    def update(self, entry: Entry, instance: ServiceInstance, wire: dict[str, Any] | None = None) -> None:
        """Replace what the model sees of ``entry`` (a status override, new metadata)."""
        entry.instance = instance
        if wire is not None:
            entry.wire = wire
        self._notify([entry.service.name])
        if self.shared is not None:
            self.shared.renew(entry.service.name, instance.id, self._document(entry))

    # -- the shared store (shared_entries.py) ---------------------------------------------------
    def wire_to_json(self, wire: dict[str, Any]) -> dict[str, Any]:
        """``Entry.wire`` as JSON for the shared store (an API whose record holds objects overrides it)."""
        return wire

    def wire_from_json(self, data: dict[str, Any]) -> dict[str, Any]:
        """The inverse of :meth:`wire_to_json`."""
        return data

    def _document(self, entry: Entry) -> dict[str, Any]:
        now, wall = self._clock(), time.time()
        inst = entry.instance.to_dict()
        del inst["origin"]
        return {"service": entry.service.to_dict(), "instance": inst, "lease_s": entry.lease_s,
                "remove_after_s": entry.remove_after_s, "wire": self.wire_to_json(entry.wire),
                "registered_at": wall - (now - entry.registered_at),
                "renewed_at": wall - (now - min(entry.renewed_at, now))}

    def _shared_event(self, service: str, instance_id: str, doc: dict[str, Any] | None) -> None:
        """An entry as etcd holds it now (``None``: removed there), written by any replica."""
        old = self.entry(service, instance_id)
        if doc is None:
            if old is not None:
                by_id = self._entries[service]
                del by_id[instance_id]
                if not by_id:
                    del self._entries[service]
                    del self._services[service]
                self._notify([service])
            return
        try:
            svc = Service.from_dict(doc["service"])
            inst = ServiceInstance.from_dict({**doc["instance"], "origin": self.name})
            now, wall = self._clock(), time.time()
            lease_s, remove_after_s = doc.get("lease_s"), doc.get("remove_after_s")
            entry = Entry(svc, inst, float(lease_s) if lease_s else None,
                          float(remove_after_s) if remove_after_s else None,
                          self.wire_from_json(dict(doc.get("wire") or {})),
                          registered_at=now - (wall - float(doc["registered_at"])))
            renewed = now - (wall - float(doc["renewed_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("registry %s: ignoring the shared entry %s/%s: %s", self.name, service, instance_id, exc)
            return
        if svc.name != service or inst.id != instance_id:
            return
        if self.shared is not None:
            renewed += self.shared.slack(doc)  # renewals taken elsewhere and not written (shared_entries.py)
        if old is not None and old.renewed_at > renewed:
            renewed = old.renewed_at  # our own renewal, not (yet) written back
        was = (old.service, self.effective(old), old.wire) if old is not None else None
        self._arm(entry, renewed)
        entry.lapsed = entry.unhealthy_at <= now
        self._services[service] = svc
        self._entries.setdefault(service, {})[instance_id] = entry
        if was != (entry.service, self.effective(entry), entry.wire):
            self._notify([service])

    def _arm(self, entry: Entry, now: float) -> None:
        entry.renewed_at = now
        entry.lapsed = False
        entry.unhealthy_at = now + entry.lease_s if entry.lease_s else _NEVER
        entry.remove_at = now + entry.remove_after_s if entry.remove_after_s else _NEVER

    # -- liveness ------------------------------------------------------------------------------
    def effective(self, entry: Entry) -> ServiceInstance:
        """What the model sees: the instance as registered, unhealthy while its lease has lapsed."""
        if entry.lapsed and entry.instance.health is Health.HEALTHY:
            return replace(entry.instance, health=Health.UNHEALTHY)
        return entry.instance

    def reap(self, now: float | None = None) -> list[tuple[str, str]]:
        """Mark lapsed leases unhealthy and drop expired ones; return (service, id) of those dropped."""
        now = self._clock() if now is None else now
        gone: list[tuple[str, str]] = []
        changed: set[str] = set()
        for entry in list(self.entries()):
            name, iid = entry.service.name, entry.instance.id
            if entry.remove_at <= now:
                gone.append((name, iid))
            elif entry.unhealthy_at <= now and not entry.lapsed:
                entry.lapsed = True
                changed.add(name)
                log.info("registry %s: %s/%s missed its heartbeats: unhealthy", self.name, name, iid)
        for name, iid in gone:  # etcd drops a shared one itself when its lease runs out
            by_id = self._entries[name]
            del by_id[iid]
            if not by_id:
                del self._entries[name]
                del self._services[name]
            changed.add(name)
            log.info("registry %s: lease of %s/%s expired", self.name, name, iid)
        self.expired += len(gone)
        if changed:
            self._notify(changed)
        return gone

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            try:
                self.reap()
            except Exception:  # one bad entry must not stop liveness for the others
                log.exception("registry %s: reaping failed", self.name)


__all__ = ["Entry", "ServedRegistry"]
