"""The Eureka server side: Eureka's REST API (v2 as Spring Cloud Netflix serves it under ``/eureka``)
over the mesh model, and the ``eureka`` registry that holds what its clients register.

Served: register ``POST apps/{APP}`` (204), renew ``PUT apps/{APP}/{id}`` (200, 404 for an unknown
instance so the client registers again, and Eureka's ``lastDirtyTimestamp`` answers: 404 for a newer
one, 409 with the registered document to a replicating peer for an older one), cancel
``DELETE apps/{APP}/{id}`` (200), status overrides
``PUT|DELETE apps/{APP}/{id}/status``, ``PUT apps/{APP}/{id}/metadata``; reads ``GET apps``,
``apps/delta``, ``apps/{APP}``, ``apps/{APP}/{id}``, ``instances/{id}``, ``vips/{vip}``,
``svips/{svip}``: every service of the mesh, whatever registry it came from. JSON when the
client's ``Accept`` names JSON, XML otherwise (none, ``*/*``, ``application/xml``), as Eureka does;
an ``Accept`` that takes neither is answered 406, as Eureka's Jersey resources do. Leases last
``leaseInfo.durationInSecs`` (default 90 s) from the last renewal; a lapsed lease is evicted.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import MeshModel, ServiceInstance
from sofamesh.plugins.registries.eureka import mapping
from sofamesh.plugins.registries.served import Entry, ServedRegistry

log = logging.getLogger("sofamesh.pilot.registry.eureka")
DELTA_RETENTION_S = 180.0  # how long a change stays in apps/delta (Eureka's retentionTimeInMSInDeltaQueue)
REPLICATION_HEADER = "x-netflix-discovery-replication"


def _timestamp(raw: object, strict: bool = True) -> int | None:
    """A ``lastDirtyTimestamp`` (milliseconds, a number or its text); ``None`` when absent. A value
    that is not a number raises ``ValueError`` (``strict``) or counts as absent."""
    if raw is None or raw == "":
        return None
    try:
        return int(str(raw))
    except ValueError:
        if strict:
            raise ValueError(f"{raw!r} is not a number of milliseconds") from None
        return None


_PRODUCED = frozenset({"*/*", "*", "application/*", "application/xml", "application/json"})


def _acceptable(accept: str) -> bool:
    """Whether ``accept`` takes XML or JSON: Eureka's resources produce only those two (Jersey answers
    406 otherwise). Which of the two is then Eureka's own rule: JSON when the header says ``json``."""
    if not accept.strip():
        return True
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = next((p[2:] for p in params if p.replace(" ", "").lower().startswith("q=")), "1")
        try:
            weight = float(q.split("=")[-1])
        except ValueError:
            weight = 1.0
        if weight > 0 and media.lower() in _PRODUCED:
            return True
    return False


class EurekaRegistry(ServedRegistry):
    """Instances registered by Eureka clients, and the Eureka API over the whole mesh."""

    kind = "eureka"

    def __init__(self, name: str, model: MeshModel | None, prefix: str = "/eureka",
                 address: str | None = None, max_lease_s: float | None = None,
                 reap_interval: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name, model, reap_interval, clock, address)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.max_lease_s = max_lease_s
        self.version = 1
        self._seen: dict[str, dict[str, ServiceInstance]] = {}
        self._recent: collections.deque[tuple[float, str, ServiceInstance]] = collections.deque()
        self.mesh.add_listener(self._on_model_change)

    # -- the delta queue -----------------------------------------------------------------------
    def _on_model_change(self, names: frozenset[str]) -> None:
        now = self._clock()
        for name in names:
            before = self._seen.get(name, {})
            after = {i.id: i for i in self.mesh.instances(name)}
            for iid, inst in after.items():
                old = before.get(iid)
                if old is None:
                    self._recent.append((now, "ADDED", inst))
                elif old != inst:
                    self._recent.append((now, "MODIFIED", inst))
            for iid, inst in before.items():
                if iid not in after:
                    self._recent.append((now, "DELETED", inst))
            if after:
                self._seen[name] = after
            else:
                self._seen.pop(name, None)
        self.version += 1
        while self._recent and self._recent[0][0] < now - DELTA_RETENTION_S:
            self._recent.popleft()

    # -- documents -----------------------------------------------------------------------------
    def document(self, inst: ServiceInstance) -> dict[str, Any]:
        """What Eureka clients see of ``inst``: what they registered, when it came through here."""
        entry = self.entry(inst.service, inst.id) if inst.origin == self.name else None
        if entry is None:
            return mapping.to_eureka(inst)
        doc = dict(entry.wire)
        doc["status"] = mapping.effective_status(doc)
        lease = dict(doc.get("leaseInfo") or {})
        lease.update(durationInSecs=int(entry.lease_s or entry.remove_after_s or mapping.DEFAULT_LEASE_S),
                     lastRenewalTimestamp=int(time.time() * 1000 - (self._clock() - entry.renewed_at) * 1000))
        doc["leaseInfo"] = lease
        return doc

    def _apps(self, keep: Callable[[ServiceInstance], bool] = lambda i: True) -> dict[str, list[dict[str, Any]]]:
        apps: dict[str, list[dict[str, Any]]] = {}
        for name in sorted(self.mesh.services()):
            docs = [self.document(i) for i in self.mesh.instances(name) if keep(i)]
            if docs:
                apps[mapping.app_name(name)] = docs
        return apps

    def hashcode(self) -> str:
        return mapping.apps_hashcode(d["status"] for docs in self._apps().values() for d in docs)

    def _find_service(self, app: str) -> str | None:
        wanted = app.upper()
        for name in self.mesh.services():
            if name.upper() == wanted:
                return name
        return None

    # -- routes --------------------------------------------------------------------------------
    def http_routes(self) -> list[web.AbstractRouteDef]:
        p = self.prefix + "/"
        return [
            web.get(p + "apps", self._get_apps), web.get(p + "apps/", self._get_apps),
            web.get(p + "apps/delta", self._get_delta),
            web.get(p + "apps/{app}", self._get_app),
            web.post(p + "apps/{app}", self._register),
            web.get(p + "apps/{app}/{id}", self._get_app_instance),
            web.put(p + "apps/{app}/{id}", self._renew),
            web.delete(p + "apps/{app}/{id}", self._cancel),
            web.put(p + "apps/{app}/{id}/status", self._set_status),
            web.delete(p + "apps/{app}/{id}/status", self._clear_status),
            web.put(p + "apps/{app}/{id}/metadata", self._set_metadata),
            web.get(p + "instances/{id}", self._get_instance),
            web.get(p + "vips/{vip}", self._get_vip),
            web.get(p + "svips/{vip}", self._get_vip),
        ]

    def own_routes(self) -> list[web.AbstractRouteDef]:
        return self.http_routes()

    @staticmethod
    def _reply(request: web.Request, tag: str, body: Any) -> web.Response:
        if not _acceptable(request.headers.get("Accept", "")):
            return web.Response(status=406)
        if "json" in request.headers.get("Accept", ""):
            return web.Response(text=json.dumps({tag: body}), content_type="application/json")
        xml = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + mapping.to_xml(tag, body)
        return web.Response(text=xml, content_type="application/xml")

    def _applications(self, request: web.Request, apps: Mapping[str, list[dict[str, Any]]],
                      hashcode: str | None = None) -> web.Response:
        doc = mapping.applications(apps, self.version, self.hashcode() if hashcode is None else hashcode)
        return self._reply(request, "applications", doc["applications"])

    async def _get_apps(self, request: web.Request) -> web.Response:
        return self._applications(request, self._apps())

    async def _get_delta(self, request: web.Request) -> web.Response:
        apps: dict[str, dict[str, dict[str, Any]]] = {}
        for _t, action, inst in self._recent:
            doc = mapping.to_eureka(inst) if action == "DELETED" else self.document(inst)
            doc["actionType"] = action
            apps.setdefault(mapping.app_name(inst.service), {})[inst.id] = doc
        return self._applications(request, {a: list(d.values()) for a, d in apps.items()})

    async def _get_app(self, request: web.Request) -> web.Response:
        name = self._find_service(request.match_info["app"])
        insts = self.mesh.instances(name) if name is not None else ()
        if not insts:
            return web.Response(status=404)
        assert name is not None
        return self._reply(request, "application", {"name": mapping.app_name(name),
                                                    "instance": [self.document(i) for i in insts]})

    def _lookup(self, iid: str, app: str | None = None) -> ServiceInstance | None:
        names = [self._find_service(app)] if app is not None else sorted(self.mesh.services())
        for name in names:
            if name is None:
                continue
            for inst in self.mesh.instances(name):
                if inst.id == iid or inst.id == mapping.instance_id(iid):
                    return inst
        return None

    async def _get_app_instance(self, request: web.Request) -> web.Response:
        inst = self._lookup(request.match_info["id"], request.match_info["app"])
        if inst is None:
            return web.Response(status=404)
        return self._reply(request, "instance", self.document(inst))

    async def _get_instance(self, request: web.Request) -> web.Response:
        inst = self._lookup(request.match_info["id"])
        if inst is None:
            return web.Response(status=404)
        return self._reply(request, "instance", self.document(inst))

    async def _get_vip(self, request: web.Request) -> web.Response:
        vip = request.match_info["vip"]
        secure = "/svips/" in request.path
        key = "secureVipAddress" if secure else "vipAddress"
        apps = self._apps(lambda i: vip in str(self.document(i).get(key, "")).split(","))
        return self._applications(request, apps)

    # -- writes --------------------------------------------------------------------------------
    async def _register(self, request: web.Request) -> web.Response:
        app = request.match_info["app"]
        text = await request.text()
        try:
            if "xml" in request.headers.get("Content-Type", ""):
                body: Any = {"instance": mapping.parse_xml_instance(text)}
            else:
                body = json.loads(text)
            doc = body.get("instance") if isinstance(body, dict) else None
            if not isinstance(doc, dict):
                raise ConfigError("instance", "the body must be {\"instance\": {...}}")
            service, inst = mapping.from_eureka(app, doc, self.name)
        except ConfigError as exc:
            return web.Response(status=400, text=f"{exc.path}: {exc.message}")
        except (ValueError, UnicodeDecodeError) as exc:
            return web.Response(status=400, text=f"not valid JSON: {exc}")
        lease = mapping.lease_of(doc)
        if self.max_lease_s is not None:
            lease = min(lease, self.max_lease_s)
        wire = dict(doc)
        wire["app"] = mapping.app_name(service.name)
        wire.setdefault("overriddenstatus", "UNKNOWN")
        wire.setdefault("status", "UP")
        old = self.entry(service.name, inst.id)
        if old is not None and old.wire.get("overriddenstatus", "UNKNOWN") != "UNKNOWN":
            wire["overriddenstatus"] = old.wire["overriddenstatus"]  # an override survives re-registration
            inst = replace(inst, health=mapping.health_of(mapping.effective_status(wire)))
        self.put(Entry(service, inst, lease_s=None, remove_after_s=lease, wire=wire))
        log.info("eureka %s: registered %s/%s at %s:%d", self.name, service.name, inst.id, inst.address,
                 inst.port)
        return web.Response(status=204)

    def _entry_of(self, request: web.Request) -> Entry | None:
        name = mapping.service_name(request.match_info["app"])
        return self.entry(name, mapping.instance_id(request.match_info["id"]))

    async def _renew(self, request: web.Request) -> web.Response:
        """Eureka's renewal: 404 for an unknown instance; then, when the client sends its
        ``lastDirtyTimestamp`` and it differs from the registered one, 404 when the client's is newer
        (it registers again with what changed), and when Pilot's is newer 409 with Pilot's document to
        a replicating peer (``x-netflix-discovery-replication: true``), 200 to a client."""
        entry = self._entry_of(request)
        if entry is None:
            return web.Response(status=404)
        try:
            theirs = _timestamp(request.query.get("lastDirtyTimestamp"))
        except ValueError as exc:
            return web.Response(status=400, text=f"lastDirtyTimestamp: {exc}")
        self.renew(entry.service.name, entry.instance.id)
        ours = _timestamp(entry.wire.get("lastDirtyTimestamp"), strict=False)
        if theirs is None or ours is None or theirs == ours:
            return web.Response(status=200)
        if theirs > ours:
            log.info("eureka %s: %s/%s renews with a newer lastDirtyTimestamp: 404 so it registers again",
                     self.name, entry.service.name, entry.instance.id)
            return web.Response(status=404)
        if request.headers.get(REPLICATION_HEADER, "").lower() == "true":
            resp = self._reply(request, "instance", self.document(entry.instance))
            resp.set_status(409)
            return resp
        return web.Response(status=200)

    async def _cancel(self, request: web.Request) -> web.Response:
        entry = self._entry_of(request)
        if entry is None:
            return web.Response(status=404)
        self.remove(entry.service.name, entry.instance.id)
        log.info("eureka %s: cancelled %s/%s", self.name, entry.service.name, entry.instance.id)
        return web.Response(status=200)

    def _restatus(self, entry: Entry, wire: dict[str, Any]) -> None:
        health = mapping.health_of(mapping.effective_status(wire))
        self.update(entry, replace(entry.instance, health=health), wire)

    async def _set_status(self, request: web.Request) -> web.Response:
        entry = self._entry_of(request)
        value = request.query.get("value", "")
        if entry is None:
            return web.Response(status=404)
        if value not in mapping.STATUSES:
            return web.Response(status=400, text=f"unknown status {value!r}")
        try:
            theirs = _timestamp(request.query.get("lastDirtyTimestamp"))
        except ValueError as exc:
            return web.Response(status=400, text=f"lastDirtyTimestamp: {exc}")
        wire = {**entry.wire, "overriddenstatus": value, "status": value}
        ours = _timestamp(entry.wire.get("lastDirtyTimestamp"), strict=False)
        if theirs is not None and (ours is None or theirs > ours):
            wire["lastDirtyTimestamp"] = str(theirs)  # a newer one is kept, as Eureka's statusUpdate does
        self._restatus(entry, wire)
        return web.Response(status=200)

    async def _clear_status(self, request: web.Request) -> web.Response:
        entry = self._entry_of(request)
        if entry is None:
            return web.Response(status=404)
        new = request.query.get("value", "UP")
        self._restatus(entry, {**entry.wire, "overriddenstatus": "UNKNOWN",
                               "status": new if new in mapping.STATUSES else "UP"})
        return web.Response(status=200)

    async def _set_metadata(self, request: web.Request) -> web.Response:
        entry = self._entry_of(request)
        if entry is None:
            return web.Response(status=404)
        meta = {**dict(entry.wire.get("metadata") or {}), **request.query}
        wire = {**entry.wire, "metadata": meta}
        try:
            _svc, inst = mapping.from_eureka(entry.service.name, wire, self.name)
        except ConfigError as exc:
            return web.Response(status=400, text=f"{exc.path}: {exc.message}")
        self.update(entry, replace(inst, id=entry.instance.id, health=entry.instance.health), wire)
        return web.Response(status=200)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prefix": self.prefix or "/", "port": self.port or None,
                "versions_delta": self.version, "delta_queue": len(self._recent)}


__all__ = ["EurekaRegistry"]
