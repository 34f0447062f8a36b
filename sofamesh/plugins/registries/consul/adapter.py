"""The Consul client side: Pilot reads an existing Consul cluster's catalog into the mesh model and,
as a writable registry, registers into it what registry sync copies there.

Reads are Consul blocking queries, as Consul's own watches do: ``/v1/catalog/services`` with
``index`` / ``wait`` for the set of services, and one ``/v1/health/service/<name>`` per service for
its instances and their checks. A service entry becomes an instance through ``mapping.from_consul``
(the same table as the server side); any critical check makes it unhealthy. While the cluster
cannot be reached the cache is kept and ``stale`` is true; the queries are retried with backoff.

Writes go to the agent at ``endpoint`` (``/v1/agent/service/register``, ``deregister``, and for an
instance with a TTL a TTL check renewed by ``/v1/agent/check/pass/service:<id>``, with
``DeregisterCriticalServiceAfter``). Labels become ``Meta`` when the key is a valid Consul meta key
(letters, digits, ``_``, ``-``; at most 64 characters) and a ``key=value`` tag otherwise
(``sofamesh.source``): both read back as the same labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx

from sofamesh.core.errors import ConfigError, PluginError
from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.pilot.registry import Notify, Registry
from sofamesh.plugins.registries.consul import mapping
from sofamesh.plugins.registries.mirrored import MirroredCache

log = logging.getLogger("sofamesh.pilot.registry.consul.adapter")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def instance_of(row: Mapping[str, Any], registry: str) -> tuple[Service, ServiceInstance]:
    """One ``/v1/health/service/<name>`` element -> (service, instance); ``ConfigError`` when unusable."""
    node = row.get("Node") or {}
    svc = row.get("Service") or {}
    if not isinstance(node, Mapping) or not isinstance(svc, Mapping):
        raise ConfigError("Service", "Node and Service must be objects")
    body = {
        "Name": svc.get("Service"),
        "ID": svc.get("ID"),
        "Address": svc.get("Address") or node.get("Address"),
        "Port": svc.get("Port"),
        "Tags": svc.get("Tags") or [],
        "Meta": svc.get("Meta") or {},
        "Weights": svc.get("Weights") or {},
    }
    service, inst, _ = mapping.from_consul(body, str(node.get("Address") or ""), registry)
    checks = row.get("Checks") or []
    critical = any(isinstance(c, Mapping) and c.get("Status") == mapping.CRITICAL for c in checks)
    if critical:
        inst = replace(inst, health=Health.UNHEALTHY)
    return service, inst


def registration_of(
    service: Service, instance: ServiceInstance, ttl_seconds: float | None, deregister_after_s: float
) -> dict[str, Any]:
    """The ``agent/service/register`` body for ``instance``."""
    labels = dict(instance.labels)
    if instance.version:
        labels.setdefault("version", instance.version)
    if instance.group:
        labels.setdefault("group", instance.group)
    if service.protocol != "http":
        labels.setdefault("protocol", service.protocol)
    meta = {k: v for k, v in labels.items() if _META_KEY.match(k) and not k.startswith("consul")}
    tags = sorted(f"{k}={v}" for k, v in labels.items() if k not in meta and not k.startswith("consul.tag."))
    tags += sorted(k[len("consul.tag.") :] for k in labels if k.startswith("consul.tag."))
    body: dict[str, Any] = {
        "ID": instance.id,
        "Name": service.name,
        "Address": instance.address,
        "Port": instance.port,
        "Tags": tags,
        "Meta": meta,
        "Weights": {"Passing": instance.weight, "Warning": 1},
    }
    if ttl_seconds:
        body["Check"] = {
            "CheckID": f"service:{instance.id}",
            "Name": "sofamesh TTL",
            "TTL": f"{max(1, round(ttl_seconds))}s",
            "Status": "passing" if instance.health is Health.HEALTHY else "critical",
            "DeregisterCriticalServiceAfter": f"{max(1, round(deregister_after_s))}s",
        }
    return body


class ConsulClusterRegistry(MirroredCache, Registry):
    """An existing Consul cluster, read through blocking queries; writable through one agent."""

    writable = True
    server = "Consul"

    def __init__(
        self,
        name: str,
        endpoint: str,
        datacenter: str = "",
        token: str = "",
        wait_s: float = 30.0,
        deregister_after_s: float = 60.0,
    ) -> None:
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        if "://" not in self.endpoint:
            self.endpoint = "http://" + self.endpoint
        self.datacenter = datacenter
        self.wait_s = max(1.0, float(wait_s))
        self.deregister_after_s = deregister_after_s
        headers = {"X-Consul-Token": token} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.endpoint, headers=headers, timeout=httpx.Timeout(self.wait_s + 15, connect=5)
        )
        self._init_cache()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._main: asyncio.Task[None] | None = None
        self.stale = True
        self.queries = 0
        self.skipped = 0
        self.errors = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, notify: Notify) -> None:
        try:
            names, index = await self._catalog(0)
            for name in names:
                await self._load(name, 0)
        except (httpx.HTTPError, ValueError, PluginError) as exc:
            await self._http.aclose()
            raise PluginError(f"registry {self.name!r}: Consul at {self.endpoint} is unreachable: {exc}") from exc
        self.stale = False
        self._notify = notify
        loop = asyncio.get_running_loop()
        self._main = loop.create_task(self._follow_catalog(index))
        for name in names:
            self._watchers[name] = loop.create_task(self._follow_service(name))
        if self._services:
            notify(list(self._services))

    async def stop(self) -> None:
        tasks = [t for t in (self._main, *self._watchers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._main, self._watchers = None, {}
        await self._http.aclose()

    # -- reading -------------------------------------------------------------------------------
    def _params(self, index: int) -> dict[str, str]:
        params = {"dc": self.datacenter} if self.datacenter else {}
        if index > 0:
            params.update(index=str(index), wait=f"{round(self.wait_s)}s")
        return params

    async def _get(self, path: str, index: int) -> tuple[Any, int]:
        self.queries += 1
        resp = await self._http.get(path, params=self._params(index))
        if resp.status_code != 200:
            raise PluginError(f"GET {path}: {resp.status_code} {resp.text[:200]}")
        new = int(resp.headers.get("X-Consul-Index", "0") or 0)
        # Consul: an index that went backwards (a snapshot restore) means start over from 0
        return resp.json(), new if new >= index else 0

    async def _catalog(self, index: int) -> tuple[list[str], int]:
        doc, new = await self._get("/v1/catalog/services", index)
        if not isinstance(doc, dict):
            raise PluginError("GET /v1/catalog/services: not an object")
        return sorted(str(n) for n in doc if str(n) != "consul"), new

    async def _load(self, name: str, index: int) -> int:
        """Read one service's health entries (blocking past ``index``); notify when they changed."""
        rows, new = await self._get(f"/v1/health/service/{quote(name, safe='')}", index)
        service: Service | None = None
        insts: dict[str, ServiceInstance] = {}
        for row in rows if isinstance(rows, list) else []:
            try:
                svc, inst = instance_of(row, self.name)
            except (ConfigError, TypeError, ValueError) as exc:
                self.skipped += 1
                log.warning("registry %s: skipping an instance of %s: %s", self.name, name, exc)
                continue
            service = service or svc
            insts[inst.id] = inst
        if self._set(name, service, insts):
            self._notify([name])
        return new

    async def _retrying(self, what: str, attempt: int, exc: Exception) -> None:
        self.errors += 1
        self.stale = True
        delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
        log.info("registry %s: %s failed (%s); retrying in %.1fs", self.name, what, exc, delay)
        await asyncio.sleep(delay)

    async def _follow_catalog(self, index: int) -> None:
        attempt = 0
        while True:
            try:
                names, index = await self._catalog(index)
            except (httpx.HTTPError, ValueError, PluginError) as exc:
                await self._retrying("catalog query", attempt, exc)
                attempt, index = attempt + 1, 0
                continue
            attempt = 0
            self.stale = False
            loop = asyncio.get_running_loop()
            for name in names:
                if name not in self._watchers:
                    self._watchers[name] = loop.create_task(self._follow_service(name))
            for name in set(self._watchers) - set(names):
                self._watchers.pop(name).cancel()
                if self._services.pop(name, None) is not None:
                    self._instances.pop(name, None)
                    self._notify([name])

    async def _follow_service(self, name: str) -> None:
        index, attempt = 0, 0
        while True:
            try:
                index = await self._load(name, index)
            except (httpx.HTTPError, ValueError, PluginError) as exc:
                await self._retrying(f"health query for {name}", attempt, exc)
                attempt, index = attempt + 1, 0
                continue
            attempt = 0

    def describe(self) -> dict[str, Any]:
        return {
            "type": "consul-cluster",
            "endpoint": self.endpoint,
            "datacenter": self.datacenter or None,
            "stale": self.stale,
            "watches": len(self._watchers),
            "queries": self.queries,
            "skipped": self.skipped,
            "errors": self.errors,
        }

    # -- writes --------------------------------------------------------------------------------
    async def _put(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self._http.put(path, json=body, params={"dc": self.datacenter} if self.datacenter else None)
        except httpx.HTTPError as exc:
            raise PluginError(f"registry {self.name!r}: PUT {path} at {self.endpoint} failed: {exc}") from exc

    async def register(self, service: Service, instance: ServiceInstance, ttl_seconds: float | None = None) -> None:
        self._check_write(service, instance)
        body = registration_of(service, instance, ttl_seconds, self.deregister_after_s)
        resp = await self._put("/v1/agent/service/register", body)
        if resp.status_code != 200:
            raise self._refused(f"{service.name}/{instance.id}", resp)
        self._applied(service, instance)

    async def deregister(self, service: str, instance_id: str) -> bool:
        resp = await self._put(f"/v1/agent/service/deregister/{quote(instance_id, safe='')}")
        if resp.status_code not in (200, 404):
            raise self._refused(f"to deregister {service}/{instance_id}", resp)
        self._dropped(service, instance_id)
        return resp.status_code == 200

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        if instance_id not in self._instances.get(service, {}):
            return False
        resp = await self._put(f"/v1/agent/check/pass/{quote(f'service:{instance_id}', safe=':')}")
        return resp.status_code == 200


__all__ = ["ConsulClusterRegistry", "instance_of", "registration_of"]
