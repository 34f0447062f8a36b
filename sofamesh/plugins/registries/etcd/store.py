"""The ``etcd`` registry: instances as JSON values under a key prefix in etcd v3 (JSON gateway).

Key ``<prefix><service>/<instance id>``; value ``{"service": {...}, "instance": {...}}`` (the
model's ``to_dict`` forms, without ``origin``). Our writes carry one lease that a task keeps alive;
if the lease is lost (etcd restarted, a long pause) a new one is granted and our keys are put again.
A watch from the last read revision keeps the cache current; when the watch stream breaks, the
prefix is read again (the cache is kept, ``stale`` true, meanwhile).

With ``instance_leases`` (Pilot replicas sharing one prefix) a registration is not tied to the Pilot
that took it: without a TTL it stays until it is deregistered; with one it is put under a lease of
its own, which a heartbeat through any replica renews (the key's lease is in the watched data), and
etcd itself removes it when the lease runs out, exactly once, whichever replicas are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import httpx

from sofamesh.core.errors import PluginError
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.registry import Notify, Registry
from sofamesh.plugins.registries.etcd.prefix import EtcdPrefix, Events, KeyValues, b64, key_of, prefix_end, value_of

log = logging.getLogger("sofamesh.pilot.registry.etcd")


class EtcdRegistry(Registry):
    writable = True

    def __init__(self, name: str, endpoint: str, prefix: str = "/sofamesh/registry/",
                 lease_ttl_s: int = 10, instance_leases: bool = False) -> None:
        self.name = name
        self.instance_leases = instance_leases
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.lease_ttl = max(2, int(lease_ttl_s))
        self._notify: Notify = lambda names: None
        self._services: dict[str, Service] = {}
        self._instances: dict[str, dict[str, ServiceInstance]] = {}
        self._owned: dict[str, bytes] = {}  # key -> value we put
        self._key_leases: dict[str, int] = {}  # key -> the lease it is under (instance_leases)
        self._lease = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.stale = True
        self.leases_granted = 0
        self._etcd = EtcdPrefix(self.endpoint, self.prefix, f"registry {name!r}")

    @property
    def revision(self) -> int:
        return self._etcd.revision

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, notify: Notify) -> None:
        try:
            self._load(await self._etcd.read())
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            await self._etcd.stop()
            raise PluginError(f"registry {self.name!r}: etcd at {self.endpoint} is unreachable: {exc}") from exc
        self.stale = False
        self._notify = notify
        self._etcd.follow(self._reloaded, self._events, self._broken)
        self._tasks = [asyncio.get_running_loop().create_task(self._keepalive_forever())]
        if self._services:
            notify(list(self._services))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._lease:
            with contextlib.suppress(httpx.HTTPError):
                await self._post("/v3/lease/revoke", {"ID": str(self._lease)})
        await self._etcd.stop()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._etcd.post(path, body)

    # -- reading -------------------------------------------------------------------------------
    def _decode(self, key: bytes, value: bytes) -> tuple[Service, ServiceInstance] | None:
        try:
            doc = json.loads(value)
            svc = Service.from_dict(doc["service"])
            inst = ServiceInstance.from_dict({**doc["instance"], "origin": self.name})
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("registry %s: ignoring key %r: %s", self.name, key, exc)
            return None
        if inst.service != svc.name:
            return None
        return svc, inst

    def _load(self, kvs: KeyValues) -> set[str]:
        """Take the whole prefix as read; return the services whose view changed."""
        services: dict[str, Service] = {}
        instances: dict[str, dict[str, ServiceInstance]] = {}
        self._key_leases = {key_of(kv): int(kv["lease"]) for kv in kvs if int(kv.get("lease", "0"))}
        for kv in kvs:
            parsed = self._decode(key_of(kv).encode(), value_of(kv))
            if parsed is not None:
                svc, inst = parsed
                services.setdefault(svc.name, svc)
                instances.setdefault(svc.name, {})[inst.id] = inst
        changed = {n for n in set(instances) | set(self._instances)
                   if instances.get(n) != self._instances.get(n) or services.get(n) != self._services.get(n)}
        self._services, self._instances = services, instances
        return changed

    def _apply(self, event: dict[str, Any]) -> str | None:
        kv = event["kv"]
        key = key_of(kv)
        rest = key[len(self.prefix):]
        service, _, instance_id = rest.partition("/")
        lease = int(kv.get("lease", "0"))
        if lease and event.get("type") != "DELETE":
            self._key_leases[key] = lease
        else:
            self._key_leases.pop(key, None)
        if event.get("type") == "DELETE":
            insts = self._instances.get(service)
            if insts is None or insts.pop(instance_id, None) is None:
                return None
            if not insts:
                del self._instances[service]
                self._services.pop(service, None)
            return service
        parsed = self._decode(key.encode(), value_of(kv))
        if parsed is None:
            return None
        svc, inst = parsed
        if self._instances.get(svc.name, {}).get(inst.id) == inst and self._services.get(svc.name) == svc:
            return None
        self._services[svc.name] = svc
        self._instances.setdefault(svc.name, {})[inst.id] = inst
        return svc.name

    def _events(self, events: Events) -> None:
        changed = {n for n in (self._apply(ev) for ev in events) if n}
        if changed:
            self._notify(changed)

    def _broken(self) -> None:
        self.stale = True

    def _reloaded(self, kvs: KeyValues) -> None:
        changed = self._load(kvs)
        self.stale = False
        if changed:
            self._notify(changed)

    async def fence(self) -> None:
        """A write the watch must deliver (``watch_fence.py``): the cache is then as current as etcd."""
        try:
            await self._etcd.wait_fence()
        except httpx.HTTPError as exc:
            raise PluginError(f"registry {self.name!r}: fence write to {self.endpoint} failed: {exc}") from exc

    # -- leases --------------------------------------------------------------------------------
    async def _grant(self) -> None:
        data = await self._post("/v3/lease/grant", {"TTL": str(self.lease_ttl)})
        self._lease = int(data["ID"])
        self.leases_granted += 1

    async def _keepalive_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            if not self._lease:
                continue
            try:
                data = await self._post("/v3/lease/keepalive", {"ID": str(self._lease)})
                alive = int(data.get("result", {}).get("TTL", "0")) > 0
                if not alive:
                    log.warning("registry %s: lease %x expired; putting our %d keys again", self.name,
                                self._lease, len(self._owned))
                    await self._grant()
                    for key, value in list(self._owned.items()):
                        await self._put(key, value)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.info("registry %s: lease keep-alive failed (%s)", self.name, exc)

    # -- reads ---------------------------------------------------------------------------------
    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return tuple(self._instances.get(service, {}).values())

    def describe(self) -> dict[str, Any]:
        return {"type": "etcd", "endpoint": self.endpoint, "prefix": self.prefix, "stale": self.stale,
                "revision": self.revision, "lease": f"{self._lease:x}", "owned": len(self._owned),
                "leases": "instance" if self.instance_leases else "pilot", "instance_leases": len(self._key_leases),
                "watch_restarts": self._etcd.watch_restarts, "fences": self._etcd.fence.fences}

    # -- writes --------------------------------------------------------------------------------
    def _key(self, service: str, instance_id: str) -> str:
        return f"{self.prefix}{service}/{instance_id}"

    async def _put(self, key: str, value: bytes, lease: int | None = None) -> None:
        lease = self._lease if lease is None else lease
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        await self._post("/v3/kv/put", body)

    async def register(self, service: Service, instance: ServiceInstance,
                       ttl_seconds: float | None = None) -> None:
        """Put ``instance`` under our lease (it lives while Pilot keeps the lease alive)."""
        if instance.service != service.name:
            raise PluginError(f"instance {instance.id!r} names service {instance.service!r}, not {service.name!r}")
        inst = instance.to_dict()
        del inst["origin"]
        value = json.dumps({"service": service.to_dict(), "instance": inst}, sort_keys=True).encode()
        key = self._key(service.name, instance.id)
        lease = 0
        try:
            if self.instance_leases:
                if ttl_seconds:
                    data = await self._post("/v3/lease/grant", {"TTL": str(max(2, round(ttl_seconds)))})
                    lease = int(data["ID"])
                await self._put(key, value, lease)
            else:
                if not self._lease:
                    await self._grant()
                lease = self._lease
                self._owned[key] = value
                await self._put(key, value)
        except httpx.HTTPError as exc:
            raise PluginError(f"registry {self.name!r}: cannot write {key}: {exc}") from exc
        # Apply at once so a read right after the write sees it (the watch confirms it later).
        if self._apply({"kv": {"key": b64(key), "value": b64(value), "lease": str(lease)}}):
            self._notify([service.name])

    async def deregister(self, service: str, instance_id: str) -> bool:
        key = self._key(service, instance_id)
        self._owned.pop(key, None)
        try:
            data = await self._post("/v3/kv/deleterange", {"key": b64(key)})
        except httpx.HTTPError as exc:
            raise PluginError(f"registry {self.name!r}: cannot delete {key}: {exc}") from exc
        if self._apply({"type": "DELETE", "kv": {"key": b64(key)}}):
            self._notify([service])
        return int(data.get("deleted", "0")) > 0

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        """Renew the instance's own lease (``instance_leases``); ``False`` when it is gone."""
        if instance_id not in self._instances.get(service, {}):
            return False
        lease = self._key_leases.get(self._key(service, instance_id), 0) if self.instance_leases else 0
        if not lease:
            return True
        try:
            data = await self._post("/v3/lease/keepalive", {"ID": str(lease)})
        except httpx.HTTPError as exc:
            raise PluginError(f"registry {self.name!r}: cannot renew {service}/{instance_id}: {exc}") from exc
        return int(data.get("result", {}).get("TTL", "0")) > 0


__all__ = ["EtcdRegistry", "prefix_end"]
