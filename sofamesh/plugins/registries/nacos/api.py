"""The Nacos server side: Nacos 1.x's naming open API (``/nacos/v1/ns/...``) over the mesh model,
and the ``nacos`` registry that holds what its clients register.

Served (parameters in the query string or a form body, as Nacos takes them): ``instance`` POST
(register), PUT (update), DELETE, GET; ``instance/list``; ``instance/beat`` (PUT; an unknown
instance is registered again from the beat, as Nacos does); ``service`` GET / POST / PUT / DELETE;
``service/list``; ``operator/metrics`` (the health probe of clients). An ephemeral instance that
has not beaten for ``heartbeat_timeout_s`` (15 s) is unhealthy, for ``ip_delete_timeout_s`` (30 s)
it is gone; a persistent one (``ephemeral=false``) stays until deleted. Errors answer as Nacos
does: status 400 and ``caused: <message>;`` in plain text. Nacos 2's gRPC protocol, on the port + 1000,
is ``grpc_api.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, MeshModel, ServiceInstance
from sofamesh.pilot.registry import Notify
from sofamesh.plugins.registries.nacos import mapping
from sofamesh.plugins.registries.nacos.grpc_api import NacosGrpcServer
from sofamesh.plugins.registries.nacos.mapping import NacosName
from sofamesh.plugins.registries.served import Entry, ServedRegistry

log = logging.getLogger("sofamesh.pilot.registry.nacos")
BASE = "/nacos/v1/ns"


def _fail(message: str, status: int = 400) -> web.Response:
    return web.Response(status=status, text=f"caused: {message};")


class NacosRegistry(ServedRegistry):
    """Instances registered by Nacos clients, and the Nacos naming API over the whole mesh."""

    kind = "nacos"

    def __init__(self, name: str, model: MeshModel | None, address: str | None = "127.0.0.1:8848",
                 heartbeat_timeout_s: float = 15.0, ip_delete_timeout_s: float = 30.0,
                 beat_interval_s: float = 5.0, reap_interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, grpc_address: str | None = None,
                 grpc_keepalive_s: float = 20.0, grpc_required: bool = True, grpc_idle_s: float = 20.0) -> None:
        super().__init__(name, model, reap_interval, clock, address)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.ip_delete_timeout_s = ip_delete_timeout_s
        self.beat_interval_s = beat_interval_s
        self.grpc = (NacosGrpcServer(self, grpc_address, grpc_keepalive_s, grpc_idle_s)
                     if grpc_address is not None else None)
        """Nacos 2's gRPC protocol (``grpc_api.py``) on ``grpc_address``, or ``None``."""
        self.grpc_required = grpc_required
        """``False`` when ``grpc_address`` was derived from ``address``: a port it cannot take is logged."""
        self.grpc_error = ""

    async def start(self, notify: Notify) -> None:
        await super().start(notify)
        if self.grpc is not None:
            try:
                await self.grpc.start()
            except ConfigError as exc:
                if self.grpc_required:
                    await super().stop()
                    raise
                self.grpc_error = exc.message
                log.warning("nacos %s: Nacos gRPC not served: %s", self.name, exc.message)
                self.grpc = None
            except BaseException:
                await super().stop()
                raise

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()
        await super().stop()

    def http_routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.route("*", BASE + "/instance", self._instance),
            web.get(BASE + "/instance/list", self._list),
            web.put(BASE + "/instance/beat", self._beat),
            web.route("*", BASE + "/service", self._service),
            web.get(BASE + "/service/list", self._service_list),
            web.get(BASE + "/operator/metrics", self._metrics),
        ]

    def own_routes(self) -> list[web.AbstractRouteDef]:
        return self.http_routes()

    @staticmethod
    async def _params(request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.can_read_body and request.content_type == "application/x-www-form-urlencoded":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return params

    def wire_to_json(self, wire: dict[str, Any]) -> dict[str, Any]:
        where = wire.get("where")
        if not isinstance(where, NacosName):
            return wire
        return {**wire, "where": [where.namespace, where.group, where.name]}

    def wire_from_json(self, data: dict[str, Any]) -> dict[str, Any]:
        where = data.get("where")
        if not (isinstance(where, list) and len(where) == 3):
            return data
        return {**data, "where": NacosName(*map(str, where))}

    @staticmethod
    def _where(params: Mapping[str, str]) -> NacosName:
        return mapping.nacos_name(params.get("serviceName", ""), params.get("groupName", ""),
                                  params.get("namespaceId", ""))

    def _hosts(self, where: NacosName) -> list[ServiceInstance]:
        return [i for i in self.mesh.instances(where.service) if mapping.matches(i, where)]

    def _host(self, inst: ServiceInstance, where: NacosName) -> dict[str, Any]:
        entry = self.entry(inst.service, inst.id) if inst.origin == self.name else None
        if entry is None:
            return mapping.to_host(inst, where)
        return mapping.to_host(inst, where, entry.wire, ephemeral=entry.remove_after_s is not None)

    # -- instances -----------------------------------------------------------------------------
    async def _instance(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        try:
            where = self._where(params)
            if request.method == "GET":
                return self._get_instance(where, params)
            service, inst = mapping.from_nacos(where, params, self.name)
        except ConfigError as exc:
            return _fail(exc.message)
        if request.method == "DELETE":
            if self.remove(service.name, inst.id) is None:
                log.info("nacos %s: delete of unknown %s/%s", self.name, service.name, inst.id)
            return web.Response(text="ok")
        if request.method not in ("POST", "PUT"):
            return _fail(f"method {request.method} is not supported", 405)
        ephemeral = params.get("ephemeral", "true").lower() != "false"
        wire: dict[str, Any] = {k: params[k] for k in ("clusterName", "weight", "enabled", "enable", "metadata")
                                if k in params}
        wire["where"] = where
        old = self.entry(service.name, inst.id)
        if request.method == "PUT" and old is not None:
            wire = {**old.wire, **wire}
        self.put(Entry(service, inst, lease_s=self.heartbeat_timeout_s if ephemeral else None,
                       remove_after_s=self.ip_delete_timeout_s if ephemeral else None, wire=wire))
        return web.Response(text="ok")

    def _get_instance(self, where: NacosName, params: Mapping[str, str]) -> web.Response:
        _svc, probe = mapping.from_nacos(where, params, self.name)
        for inst in self._hosts(where):
            if inst.address == probe.address and inst.port == probe.port:
                host = self._host(inst, where)
                return web.json_response({"service": where.grouped, "ip": inst.address, "port": inst.port,
                                          "clusterName": host["clusterName"], "weight": host["weight"],
                                          "healthy": host["healthy"], "instanceId": host["instanceId"],
                                          "metadata": host["metadata"]})
        return _fail(f"no ips found for cluster {params.get('cluster', mapping.DEFAULT_CLUSTER)} "
                     f"in service {where.grouped}", 404)

    async def _list(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        try:
            where = self._where(params)
        except ConfigError as exc:
            return _fail(exc.message)
        healthy_only = params.get("healthyOnly", "false").lower() == "true"
        return web.json_response(self.service_info(where, params.get("clusters", ""), healthy_only))

    def service_info(self, where: NacosName, clusters: str = "", healthy_only: bool = False,
                     name: str | None = None) -> dict[str, Any]:
        """Nacos's ``ServiceInfo`` of ``where``: its hosts in ``clusters`` (comma-separated, all when
        empty), named ``name`` (the v1 API: ``GROUP@@name``; the gRPC protocol: the bare name)."""
        wanted = [c for c in clusters.split(",") if c]
        hosts = [self._host(i, where) for i in self._hosts(where)]
        if wanted:
            hosts = [h for h in hosts if h["clusterName"] in wanted]
        if healthy_only:
            hosts = [h for h in hosts if h["healthy"]]
        return {
            "name": where.grouped if name is None else name, "groupName": where.group, "clusters": clusters,
            "cacheMillis": 3000, "hosts": hosts,
            "lastRefTime": int(time.time() * 1000) + self.mesh.service_index(where.service),
            "checksum": "", "allIPs": False, "reachProtectionThreshold": False, "valid": True}

    async def _beat(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        try:
            beat = json.loads(params.get("beat") or "{}")
            if not isinstance(beat, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return _fail(f"beat is not valid JSON: {exc}")
        merged = {**params, **{k: v for k, v in beat.items() if k != "serviceName"}}
        merged["serviceName"] = params.get("serviceName") or str(beat.get("serviceName") or "")
        if not beat and not params.get("ip"):
            return web.json_response({"code": 20404, "clientBeatInterval": int(self.beat_interval_s * 1000)})
        try:
            where = self._where(merged)
            service, inst = mapping.from_nacos(where, merged, self.name)
        except ConfigError as exc:
            return _fail(exc.message)
        if self.renew(service.name, inst.id) is None:
            if not beat:
                return web.json_response({"code": 20404, "clientBeatInterval": int(self.beat_interval_s * 1000)})
            log.info("nacos %s: beat of unknown %s/%s: registering it", self.name, service.name, inst.id)
            wire = {"clusterName": merged.get("cluster", mapping.DEFAULT_CLUSTER), "weight": merged.get("weight"),
                    "metadata": beat.get("metadata") or {}, "where": where}
            self.put(Entry(service, inst, lease_s=self.heartbeat_timeout_s,
                           remove_after_s=self.ip_delete_timeout_s, wire=wire))
        return web.json_response({"clientBeatInterval": int(self.beat_interval_s * 1000), "code": 10200,
                                  "lightBeatEnabled": False})

    # -- services ------------------------------------------------------------------------------
    def names(self, namespace: str, group: str) -> list[str]:
        """Every Nacos service name in ``namespace`` / ``group``, mesh services included."""
        names: set[str] = set()
        elsewhere: set[str] = set()  # mesh names of services registered outside the default group
        for entry in self.entries():
            where = entry.wire.get("where")
            if isinstance(where, NacosName):
                if where.namespace == namespace and where.group == group:
                    names.add(where.name)
                if (where.namespace, where.group) != (mapping.DEFAULT_NAMESPACE, mapping.DEFAULT_GROUP):
                    elsewhere.add(where.service)
        if namespace == mapping.DEFAULT_NAMESPACE and group == mapping.DEFAULT_GROUP:
            for name, svc in self.mesh.services().items():
                if name in elsewhere:
                    continue
                names.add(name)
                if svc.protocol == "dubbo":
                    for inst in self.mesh.instances(name):
                        names.add(f"providers:{name}:{inst.version}:{inst.group}")
        return sorted(names)

    async def _service(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        try:
            where = self._where(params)
        except ConfigError as exc:
            return _fail(exc.message)
        if request.method != "GET":
            return web.Response(text="ok")  # services exist while they have instances
        hosts = self._hosts(where)
        if not hosts and where.name not in self.names(where.namespace, where.group):
            return _fail(f"service {where.grouped} is not found!")
        clusters = sorted({self._host(i, where)["clusterName"] for i in hosts})
        return web.json_response({
            "namespaceId": where.namespace, "groupName": where.group, "name": where.name,
            "protectThreshold": 0.0, "metadata": {}, "selector": {"type": "none"},
            "clusters": [{"name": c, "healthChecker": {"type": "TCP"}, "metadata": {}} for c in clusters]})

    async def _service_list(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        ns = params.get("namespaceId") or mapping.DEFAULT_NAMESPACE
        ns = mapping.DEFAULT_NAMESPACE if ns == "default" else ns
        names = self.names(ns, params.get("groupName") or mapping.DEFAULT_GROUP)
        try:
            page, size = max(1, int(params.get("pageNo", "1"))), max(1, int(params.get("pageSize", "20")))
        except ValueError:
            return _fail("pageNo and pageSize must be numbers")
        return web.json_response({"count": len(names), "doms": names[(page - 1) * size: page * size]})

    async def _metrics(self, request: web.Request) -> web.Response:
        insts = sum(len(self.mesh.instances(n)) for n in self.mesh.services())
        healthy = sum(1 for n in self.mesh.services() for i in self.mesh.instances(n) if i.health is Health.HEALTHY)
        return web.json_response({"status": "UP", "serviceCount": len(self.mesh.services()),
                                  "instanceCount": insts, "healthyInstanceCount": healthy,
                                  "responsibleServiceCount": len(self.mesh.services()),
                                  "responsibleInstanceCount": insts, "clientCount": 0, "cpu": 0.0, "load": 0.0,
                                  "mem": 0.0})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "port": self.port or None,
                "grpc": self.grpc.describe() if self.grpc is not None else {"error": self.grpc_error or None}}


__all__ = ["NacosRegistry"]
