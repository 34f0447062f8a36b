"""The Consul server side: the HTTP API of one Consul agent (and its catalog) over the mesh model, and
the ``consul`` registry that holds what its clients register.

Served on a port of its own (default ``127.0.0.1:8500``: Consul clients use the path root, which on
Pilot's API port belongs to the Open Service Registry API): ``agent/service/register``,
``agent/service/deregister/{id}``, ``agent/check/pass|warn|fail|update/{id}``, ``agent/services``,
``agent/service/{id}``, ``agent/checks``, ``agent/self``, ``catalog/services``,
``catalog/service/{name}``, ``catalog/datacenters``, ``catalog/nodes``, ``health/service/{name}``
(``passing``, ``tag``), ``status/leader``, ``status/peers``. Catalog and health reads carry
``X-Consul-Index`` and block on ``index`` / ``wait`` (default 5 min, at most 10 min, as Consul).
A TTL check not passed within its TTL turns critical; HTTP and TCP checks are run by Pilot at their
``Interval`` (``checks.py``); ``DeregisterCriticalServiceAfter`` removes a service whose check stayed
critical that long. Script checks are accepted and count as passing: Pilot does not run them
(docs/registries.md).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, MeshModel, ServiceInstance
from sofamesh.pilot.registry import Notify
from sofamesh.plugins.registries.consul import mapping
from sofamesh.plugins.registries.consul.checks import CheckRunner
from sofamesh.plugins.registries.served import Entry, ServedRegistry

log = logging.getLogger("sofamesh.pilot.registry.consul")
MAX_WAIT_S = 600.0
DEFAULT_WAIT_S = 300.0
JITTER_FRACTION = 16  # Consul adds up to wait / 16 to spread the wake-ups of concurrent queries
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


class ConsulRegistry(ServedRegistry):
    """Instances registered through Consul's agent API, and Consul's catalog over the whole mesh."""

    kind = "consul"

    def __init__(self, name: str, model: MeshModel | None, address: str | None = "127.0.0.1:8500",
                 datacenter: str = "dc1", node: str = "sofamesh-pilot", node_address: str = "127.0.0.1",
                 reap_interval: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name, model, reap_interval, clock, address)
        self.datacenter = datacenter
        self.node = {"ID": "00000000-0000-0000-0000-000000000001", "Node": node, "Address": node_address,
                     "Datacenter": datacenter}
        self.checks = CheckRunner(self._check_alive, self._checked, clock)

    async def start(self, notify: Notify) -> None:
        await self.checks.start()
        await super().start(notify)

    async def stop(self) -> None:
        await super().stop()
        await self.checks.stop()

    def own_routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.put("/v1/agent/service/register", self._register),
            web.put("/v1/agent/service/deregister/{id}", self._deregister),
            web.put("/v1/agent/check/{state:pass|warn|fail}/{id}", self._check_state),
            web.put("/v1/agent/check/update/{id}", self._check_update),
            web.get("/v1/agent/services", self._agent_services),
            web.get("/v1/agent/service/{id}", self._agent_service),
            web.get("/v1/agent/checks", self._agent_checks),
            web.get("/v1/agent/self", self._agent_self),
            web.get("/v1/catalog/services", self._catalog_services),
            web.get("/v1/catalog/service/{name}", self._catalog_service),
            web.get("/v1/catalog/datacenters", self._datacenters),
            web.get("/v1/catalog/nodes", self._nodes),
            web.get("/v1/health/service/{name}", self._health_service),
            web.get("/v1/status/leader", self._leader),
            web.get("/v1/status/peers", self._peers),
        ]

    # -- agent ---------------------------------------------------------------------------------
    async def _register(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text() or "null")
            if not isinstance(body, dict):
                raise ConfigError("body", "Request decode failed: expected a JSON object")
            service, inst, checks = mapping.from_consul(body, self.node["Address"], self.name)
        except ConfigError as exc:
            return web.Response(status=400, text=f"Invalid Service: {exc.path}: {exc.message}")
        except (ValueError, UnicodeDecodeError) as exc:
            return web.Response(status=400, text=f"Request decode failed: {exc}")
        now = self._clock()
        for c in checks:
            c["deadline"] = now + c["ttl_s"] if c["ttl_s"] else None
            c["critical_since"] = now if c["Status"] == mapping.CRITICAL else None
        self._drop_sid(str(mapping.lower_keys(body).get("id") or service.name))
        wire = {**mapping.lower_keys(body), "checks": checks}
        entry = Entry(service, inst, wire=wire)
        self.put(entry)
        self.checks.schedule(entry)
        log.info("consul %s: registered %s/%s at %s:%d", self.name, service.name, inst.id, inst.address, inst.port)
        return web.Response(text="")

    def _by_sid(self, sid: str) -> Entry | None:
        for entry in self.entries():
            if str(entry.wire.get("id") or entry.service.name) == sid:
                return entry
        return None

    def _drop_sid(self, sid: str) -> None:
        entry = self._by_sid(sid)
        if entry is not None:
            self.remove(entry.service.name, entry.instance.id)

    async def _deregister(self, request: web.Request) -> web.Response:
        entry = self._by_sid(request.match_info["id"])
        if entry is None:
            return web.Response(status=404, text=f'Unknown service ID "{request.match_info["id"]}". '
                                                 "Ensure that the service ID is passed, not the service name.")
        self.remove(entry.service.name, entry.instance.id)
        return web.Response(text="")

    def _find_check(self, cid: str) -> tuple[Entry, dict[str, Any]] | None:
        for entry in self.entries():
            for check in entry.wire.get("checks", []):
                if check["CheckID"] == cid:
                    return entry, check
        return None

    def _set_check(self, cid: str, status: str, output: str) -> web.Response:
        found = self._find_check(cid)
        if found is None:
            return web.Response(status=404, text=f'CheckID "{cid}" does not have associated TTL')
        entry, check = found
        now = self._clock()
        check["Status"], check["Output"] = status, output
        check["deadline"] = now + check["ttl_s"] if check["ttl_s"] else None
        check["critical_since"] = now if status == mapping.CRITICAL else None
        self._rehealth(entry)
        return web.Response(text="")

    async def _check_state(self, request: web.Request) -> web.Response:
        status = {"pass": mapping.PASSING, "warn": mapping.WARNING, "fail": mapping.CRITICAL}[
            request.match_info["state"]]
        return self._set_check(request.match_info["id"], status, request.query.get("note", ""))

    async def _check_update(self, request: web.Request) -> web.Response:
        try:
            body = mapping.lower_keys(json.loads(await request.text() or "{}"))
        except ValueError as exc:
            return web.Response(status=400, text=f"Request decode failed: {exc}")
        status = str(body.get("status", ""))
        if status not in (mapping.PASSING, mapping.WARNING, mapping.CRITICAL):
            return web.Response(status=400, text=f'Invalid check status: "{status}"')
        return self._set_check(request.match_info["id"], status, str(body.get("output", "")))

    def _check_alive(self, entry: Entry, check: dict[str, Any]) -> bool:
        """Whether ``check`` is still one of a registered instance's (not deregistered, not replaced)."""
        return self.entry(entry.service.name, entry.instance.id) is entry and any(
            c is check for c in entry.wire.get("checks", []))

    def _checked(self, entry: Entry, check: dict[str, Any], status: str, output: str) -> None:
        """The result of an HTTP or TCP check run by Pilot."""
        if status != check["Status"]:
            log.info("consul %s: check %s is %s: %s", self.name, check["CheckID"], status, output[:200])
            check["critical_since"] = self._clock() if status == mapping.CRITICAL else None
        check["Status"], check["Output"] = status, output
        self._rehealth(entry)

    def _rehealth(self, entry: Entry) -> None:
        health = mapping.health_of(entry.wire.get("checks", []))
        if health is not entry.instance.health:
            self.update(entry, replace(entry.instance, health=health))

    def reap(self, now: float | None = None) -> list[tuple[str, str]]:
        """TTL checks past their deadline turn critical; critical too long means deregistered."""
        now = self._clock() if now is None else now
        gone: list[tuple[str, str]] = []
        for entry in list(self.entries()):
            for check in entry.wire.get("checks", []):
                if check["deadline"] is not None and check["deadline"] <= now and check["Status"] != mapping.CRITICAL:
                    check["Status"], check["Output"] = mapping.CRITICAL, "TTL expired"
                    check["critical_since"] = now
                    log.info("consul %s: check %s TTL expired", self.name, check["CheckID"])
                dereg = check["deregister_s"]
                if dereg and check["critical_since"] is not None and now - check["critical_since"] >= dereg:
                    gone.append((entry.service.name, entry.instance.id))
                    break
            else:
                self._rehealth(entry)
        for name, iid in gone:
            self.remove(name, iid)
            log.info("consul %s: %s/%s critical for too long: deregistered", self.name, name, iid)
        self.expired += len(gone)
        return gone

    def _entries_of(self, name: str) -> list[tuple[ServiceInstance, dict[str, Any]]]:
        out = []
        for inst in self.mesh.instances(name):
            entry = self.entry(inst.service, inst.id) if inst.origin == self.name else None
            out.append((inst, mapping.catalog_entry(inst, self.node, max(1, self.mesh.service_index(name)),
                                                    entry.wire if entry else None)))
        return out

    async def _agent_services(self, request: web.Request) -> web.Response:
        out = {}
        for entry in self.entries():
            doc = mapping.catalog_entry(entry.instance, self.node, 1, entry.wire)
            out[doc["ServiceID"]] = mapping.agent_service(doc, self.datacenter)
        return web.json_response(out)

    async def _agent_service(self, request: web.Request) -> web.Response:
        entry = self._by_sid(request.match_info["id"])
        if entry is None:
            return web.Response(status=404, text="unknown service ID")
        doc = mapping.catalog_entry(entry.instance, self.node, 1, entry.wire)
        return web.json_response(mapping.agent_service(doc, self.datacenter))

    def _check_docs(self, entry: Entry) -> list[dict[str, Any]]:
        sid = str(entry.wire.get("id") or entry.service.name)
        return [{"Node": self.node["Node"], "CheckID": c["CheckID"], "Name": c["Name"], "Status": c["Status"],
                 "Notes": c["Notes"], "Output": c["Output"], "ServiceID": sid, "ServiceName": entry.service.name,
                 "ServiceTags": list(entry.wire.get("tags") or []), "Type": c["Type"]}
                for c in entry.wire.get("checks", [])]

    async def _agent_checks(self, request: web.Request) -> web.Response:
        return web.json_response({c["CheckID"]: c for e in self.entries() for c in self._check_docs(e)})

    async def _agent_self(self, request: web.Request) -> web.Response:
        return web.json_response({"Config": {"Datacenter": self.datacenter, "NodeName": self.node["Node"],
                                             "NodeID": self.node["ID"], "Server": True, "Version": "1.15.0"},
                                  "Member": {"Name": self.node["Node"], "Addr": self.node["Address"], "Port": 8301,
                                             "Status": 1}})

    # -- catalog and health (blocking queries) -------------------------------------------------
    async def _block(self, request: web.Request, service: str | None) -> int:
        """A blocking query as Consul's: ``wait`` a Go duration (else 400 ``Invalid wait time``; none
        or 0: 5 min; at most 10 min; plus up to 1/16 of it), ``index`` a whole number (else 400
        ``Invalid index``); 0 or none answers at once. The index answered is never below 1."""
        try:
            wait = mapping.go_duration(request.query["wait"]) if request.query.get("wait") else 0.0
        except ValueError:
            raise web.HTTPBadRequest(text="Invalid wait time") from None
        raw = request.query.get("index", "")
        if raw and not raw.isdigit():
            raise web.HTTPBadRequest(text="Invalid index")
        index = int(raw) if raw else 0
        current = self.mesh.index if service is None else self.mesh.service_index(service)
        if index > 0:
            wait = min(wait if wait > 0 else DEFAULT_WAIT_S, MAX_WAIT_S)
            wait += random.uniform(0, wait / JITTER_FRACTION)
            current = await self.mesh.wait(service, index, wait)
        return max(1, current)

    @staticmethod
    def _tags(request: web.Request) -> list[str]:
        """Every ``tag`` given: an entry must carry them all (Consul 1.2.3+)."""
        return request.query.getall("tag", [])

    @staticmethod
    def _indexed(data: Any, index: int) -> web.Response:
        return web.json_response(data, headers={"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true",
                                                "X-Consul-LastContact": "0"})

    async def _catalog_services(self, request: web.Request) -> web.Response:
        index = await self._block(request, None)
        out: dict[str, list[str]] = {}
        for name in sorted(self.mesh.services()):
            tags: set[str] = set()
            for _inst, doc in self._entries_of(name):
                tags.update(doc["ServiceTags"])
            out[name] = sorted(tags)
        return self._indexed(out, index)

    async def _catalog_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await self._block(request, name)
        tags = self._tags(request)
        docs = [d for _i, d in self._entries_of(name) if all(t in d["ServiceTags"] for t in tags)]
        return self._indexed(docs, index)

    async def _health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = request.query.get("passing")
        if raw is not None and raw != "" and raw not in _GO_BOOLS:  # Go's strconv.ParseBool
            raise web.HTTPBadRequest(text="Invalid value for ?passing")
        passing = raw is not None and (raw == "" or _GO_BOOLS[raw])
        index = await self._block(request, name)
        tags = self._tags(request)
        out = []
        for inst, doc in self._entries_of(name):
            if not all(t in doc["ServiceTags"] for t in tags):
                continue
            entry = self.entry(inst.service, inst.id) if inst.origin == self.name else None
            checks = self._check_docs(entry) if entry is not None else [{
                "Node": self.node["Node"], "CheckID": f"sofamesh:{inst.id}", "Name": "sofamesh health",
                "Status": mapping.PASSING if inst.health is Health.HEALTHY else mapping.CRITICAL, "Notes": "",
                "Output": f"mesh health {inst.health.value}", "ServiceID": doc["ServiceID"], "ServiceName": name,
                "ServiceTags": [], "Type": ""}]
            if passing and (inst.health is not Health.HEALTHY or any(c["Status"] != mapping.PASSING for c in checks)):
                continue
            node = {"ID": self.node["ID"], "Node": self.node["Node"], "Address": self.node["Address"],
                    "Datacenter": self.datacenter, "TaggedAddresses": {"lan": self.node["Address"]}, "Meta": {}}
            service = {"ID": doc["ServiceID"], "Service": name, "Tags": doc["ServiceTags"],
                       "Address": doc["ServiceAddress"], "Meta": doc["ServiceMeta"], "Port": doc["ServicePort"],
                       "Weights": doc["ServiceWeights"], "EnableTagOverride": False}
            out.append({"Node": node, "Service": service, "Checks": checks})
        return self._indexed(out, index)

    async def _datacenters(self, request: web.Request) -> web.Response:
        return web.json_response([self.datacenter])

    async def _nodes(self, request: web.Request) -> web.Response:
        index = await self._block(request, None)
        return self._indexed([{**self.node, "TaggedAddresses": {"lan": self.node["Address"]}, "Meta": {}}], index)

    async def _leader(self, request: web.Request) -> web.Response:
        return web.json_response(f"{self.node['Address']}:8300")

    async def _peers(self, request: web.Request) -> web.Response:
        return web.json_response([f"{self.node['Address']}:8300"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "port": self.port or None, "datacenter": self.datacenter}


__all__ = ["ConsulRegistry"]
