"""The embedded registry's store: a dict in memory, a JSON file on disk, TTL leases.

Every write is persisted before it is acknowledged, atomically (temp file, fsync, ``os.replace``,
fsync of the directory), so a crash leaves either the old or the new file, never a torn one.
Writes run on a worker thread, one at a time; changes made while one is in flight are committed
together by the next one (group commit), so the event loop never waits on the disk.
Leases are kept in memory only: after a restart each leased instance gets a fresh full lease, as
its owner could not heartbeat while Pilot was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sofamesh.core.errors import PluginError
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.registry import Notify, Registry

log = logging.getLogger("sofamesh.pilot.registry.embedded")
_FORMAT = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class EmbeddedRegistry(Registry):
    """In-process writable registry; ``path`` is its JSON store."""

    writable = True

    def __init__(self, name: str, path: Path, reap_interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.path = path
        self._reap_interval = reap_interval
        self._services: dict[str, Service] = {}
        self._instances: dict[str, dict[str, ServiceInstance]] = {}
        self._leases: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (ttl, deadline)
        self._notify: Notify = lambda names: None
        self._reaper: asyncio.Task[None] | None = None
        self.writes = 0
        self.expired = 0
        self._write_lock = asyncio.Lock()
        self._changes = 0  # changes made in memory
        self._committed = 0  # changes known to be on disk

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, notify: Notify) -> None:
        self._load()
        self._notify = notify
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        if self._services:
            notify(list(self._services))

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(raw)
            if doc.get("format") != _FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            now = self._clock()
            for sdoc in doc["services"]:
                svc = Service.from_dict(sdoc)
                self._services[svc.name] = svc
                self._instances[svc.name] = {}
            for idoc in doc["instances"]:
                inst = ServiceInstance.from_dict({**idoc, "origin": self.name})
                self._instances.setdefault(inst.service, {})[inst.id] = inst
                ttl = idoc.get("ttl_seconds")
                if ttl:
                    self._leases[(inst.service, inst.id)] = (float(ttl), now + float(ttl))
        except (ValueError, KeyError, TypeError) as exc:
            raise PluginError(f"registry {self.name!r}: store {self.path} is unreadable: {exc}") from exc

    async def _persist(self) -> None:
        """Return once the store on disk holds every change made before this call."""
        self._changes += 1
        wanted = self._changes
        async with self._write_lock:
            if self._committed >= wanted:
                return  # a write that started after our change already covered it
            upto, data = self._changes, self._serialize()
            await asyncio.get_running_loop().run_in_executor(None, atomic_write, self.path, data)
            self._committed = upto
            self.writes += 1

    def _serialize(self) -> bytes:
        instances = []
        for insts in self._instances.values():
            for inst in insts.values():
                d = inst.to_dict()
                del d["origin"]
                lease = self._leases.get((inst.service, inst.id))
                d["ttl_seconds"] = lease[0] if lease else None
                instances.append(d)
        doc = {"format": _FORMAT, "services": [s.to_dict() for s in self._services.values()],
               "instances": instances}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    # -- reads ---------------------------------------------------------------------------------
    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return tuple(self._instances.get(service, {}).values())

    def describe(self) -> dict[str, Any]:
        now = self._clock()
        return {"type": "embedded", "file": str(self.path), "writes": self.writes, "expired": self.expired,
                "leases": {f"{s}/{i}": {"ttl_seconds": ttl, "expires_in_s": round(dl - now, 3)}
                           for (s, i), (ttl, dl) in sorted(self._leases.items())}}

    # -- writes --------------------------------------------------------------------------------
    async def register(self, service: Service, instance: ServiceInstance,
                       ttl_seconds: float | None = None) -> None:
        await self.register_many([(service, instance, ttl_seconds)])

    async def register_many(self, items: Sequence[tuple[Service, ServiceInstance, float | None]]) -> None:
        """Register a batch with one write to disk and one change notification."""
        names: set[str] = set()
        for service, instance, ttl in items:
            if instance.service != service.name:
                raise PluginError(f"instance {instance.id!r} names service {instance.service!r}, "
                                  f"not {service.name!r}")
            if instance.origin != self.name:
                instance = ServiceInstance.from_dict({**instance.to_dict(), "origin": self.name})
            self._services[service.name] = service
            self._instances.setdefault(service.name, {})[instance.id] = instance
            key = (service.name, instance.id)
            if ttl:
                self._leases[key] = (ttl, self._clock() + ttl)
            else:
                self._leases.pop(key, None)
            names.add(service.name)
        await self._persist()
        self._notify(names)

    async def deregister(self, service: str, instance_id: str) -> bool:
        if not self._remove(service, instance_id):
            return False
        await self._persist()
        self._notify([service])
        return True

    def _remove(self, service: str, instance_id: str) -> bool:
        insts = self._instances.get(service)
        if insts is None or insts.pop(instance_id, None) is None:
            return False
        self._leases.pop((service, instance_id), None)
        return True

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        if instance_id not in self._instances.get(service, {}):
            return False
        key = (service, instance_id)
        lease = self._leases.get(key)
        if lease is not None:
            self._leases[key] = (lease[0], self._clock() + lease[0])
        return True

    # -- leases --------------------------------------------------------------------------------
    async def reap(self, now: float | None = None) -> list[tuple[str, str]]:
        """Drop every instance whose lease ran out; return (service, id) of each one dropped."""
        now = self._clock() if now is None else now
        gone = [key for key, (_ttl, deadline) in self._leases.items() if deadline <= now]
        for service, instance_id in gone:
            self._remove(service, instance_id)
            log.info("registry %s: lease of %s/%s expired", self.name, service, instance_id)
        if gone:
            self.expired += len(gone)
            await self._persist()
            self._notify({s for s, _ in gone})
        return gone

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            try:
                await self.reap()
            except OSError:
                log.exception("registry %s: could not persist expired leases", self.name)
