"""The Eureka client side: Pilot reads an existing Eureka server's applications into the mesh model
and, as a writable registry, registers into it what registry sync copies there.

Reads are what Eureka's own clients do: one full ``GET apps`` (JSON), then every
``fetch_interval_s`` a ``GET apps/delta`` applied to the local copy (``ADDED`` / ``MODIFIED``
replace an instance, ``DELETED`` removes it), after which the local ``apps__hashcode`` (the count of
each status) must equal the server's; on a mismatch, or a delta the server does not give, a full
fetch replaces the copy. Instances go through ``mapping.from_eureka`` (the server side's table).
While the server cannot be reached the last known instances are kept and ``stale`` is true.

Writes: register ``POST apps/{APP}`` with ``leaseInfo.durationInSecs``, a renewal
``PUT apps/{APP}/{id}`` every ``renewal_interval_s`` for each instance registered here (a 404
registers it again, as Eureka clients do), cancel ``DELETE apps/{APP}/{id}``. Labels travel as
``metadata`` (``sofamesh.source``, ``sofamesh.sync`` included) and read back as the same labels.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from sofamesh.core.errors import ConfigError, PluginError
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.registry import Registry
from sofamesh.plugins.registries.eureka import mapping
from sofamesh.plugins.registries.mirrored import PolledMirror

log = logging.getLogger("sofamesh.pilot.registry.eureka.adapter")
_JSON = {"Accept": "application/json"}


def _applications(doc: Any) -> tuple[list[tuple[str, list[Mapping[str, Any]]]], str]:
    """An ``applications`` document -> ([(app name, instance documents)], ``apps__hashcode``)."""
    apps = doc.get("applications") if isinstance(doc, Mapping) else None
    if not isinstance(apps, Mapping):
        raise PluginError('not an {"applications": {...}} document')
    rows = apps.get("application") or []
    if isinstance(rows, Mapping):  # one application: some Eureka versions write an object, not a list
        rows = [rows]
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, Mapping):
            continue
        insts = row.get("instance") or []
        if isinstance(insts, Mapping):
            insts = [insts]
        out.append((str(row.get("name") or ""), [i for i in insts if isinstance(i, Mapping)]))
    return out, str(apps.get("apps__hashcode") or "")


def _key(doc: Mapping[str, Any]) -> str:
    return str(doc.get("instanceId") or doc.get("hostName") or "")


@dataclass
class Mirror:
    """The client's copy of the server's registry: instance documents by application and id."""

    apps: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)

    def hashcode(self) -> str:
        return mapping.apps_hashcode(str(d.get("status") or "UNKNOWN") for a in self.apps.values() for d in a.values())

    def replace_all(self, doc: Any) -> set[str]:
        """A full ``GET apps`` answer replaces the copy; the applications that changed."""
        rows, _hash = _applications(doc)
        new: dict[str, dict[str, Mapping[str, Any]]] = {}
        for app, insts in rows:
            for inst in insts:
                new.setdefault(app.upper(), {})[_key(inst)] = inst
        changed = {a for a in set(new) | set(self.apps) if new.get(a) != self.apps.get(a)}
        self.apps = new
        return changed

    def apply_delta(self, doc: Any) -> tuple[set[str], bool]:
        """An ``apps/delta`` answer applied; (applications changed, hashcode now equal to the server's)."""
        rows, server_hash = _applications(doc)
        changed: set[str] = set()
        for app, insts in rows:
            name = app.upper()
            for inst in insts:
                action = str(inst.get("actionType") or "MODIFIED")
                current = self.apps.setdefault(name, {})
                if action == "DELETED":
                    if current.pop(_key(inst), None) is not None:
                        changed.add(name)
                else:
                    body = {k: v for k, v in inst.items() if k != "actionType"}
                    if current.get(_key(inst)) != body:
                        current[_key(inst)] = body
                        changed.add(name)
                if not current:
                    self.apps.pop(name, None)
        return changed, self.hashcode() == server_hash


class EurekaClusterRegistry(PolledMirror, Registry):
    """An existing Eureka server, read by full and delta fetches; writable."""

    writable = True
    server = "Eureka"

    def __init__(
        self,
        name: str,
        endpoint: str,
        fetch_interval_s: float = 30.0,
        renewal_interval_s: float = 30.0,
        lease_s: float = 90.0,
    ) -> None:
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        if "://" not in self.endpoint:
            self.endpoint = "http://" + self.endpoint
        self.lease_s = max(1.0, float(lease_s))
        self._http = httpx.AsyncClient(
            base_url=self.endpoint + "/", headers=_JSON, timeout=httpx.Timeout(15, connect=5)
        )
        self._init_polling(fetch_interval_s, renewal_interval_s)
        self.mirror = Mirror()
        self.full_fetches = 0
        self.delta_fetches = 0
        self.mismatches = 0
        self.skipped = 0

    # -- reading -------------------------------------------------------------------------------
    async def _get(self, path: str) -> Any:
        resp = await self._http.get(path)
        if resp.status_code != 200:
            raise PluginError(f"GET {path}: {resp.status_code} {resp.text[:200]}")
        return resp.json()

    async def _fetch(self, first: bool) -> set[str]:
        return await (self._full() if first or self.stale else self._delta())

    async def _full(self) -> set[str]:
        self.full_fetches += 1
        return self._rebuild(self.mirror.replace_all(await self._get("apps")))

    async def _delta(self) -> set[str]:
        self.delta_fetches += 1
        try:
            changed, same = self.mirror.apply_delta(await self._get("apps/delta"))
        except PluginError:  # no delta from this server: fetch everything, as Eureka clients do
            same, changed = False, set()
        if same:
            return self._rebuild(changed)
        self.mismatches += 1
        log.info("registry %s: apps__hashcode differs after the delta; fetching everything", self.name)
        return self._rebuild(changed) | await self._full()

    def _rebuild(self, apps: set[str]) -> set[str]:
        """Map the mirror's ``apps`` into the model's services; the service names that changed."""
        changed = set()
        for app in apps:
            name = mapping.service_name(app)
            service: Service | None = None
            insts: dict[str, ServiceInstance] = {}
            for doc in self.mirror.apps.get(app, {}).values():
                try:
                    svc, inst = mapping.from_eureka(app, doc, self.name)
                except (ConfigError, TypeError, ValueError) as exc:
                    self.skipped += 1
                    log.warning("registry %s: skipping an instance of %s: %s", self.name, app, exc)
                    continue
                service = service or svc
                insts[inst.id] = inst
            if self._set(name, service, insts):
                changed.add(name)
        return changed

    def describe(self) -> dict[str, Any]:
        return {
            "type": "eureka-cluster",
            "endpoint": self.endpoint,
            "stale": self.stale,
            "apps_hashcode": self.mirror.hashcode(),
            "full_fetches": self.full_fetches,
            "delta_fetches": self.delta_fetches,
            "hashcode_mismatches": self.mismatches,
            "registered": len(self._own),
            "skipped": self.skipped,
            "errors": self.errors,
        }

    # -- writes --------------------------------------------------------------------------------
    def _path(self, service: str, instance_id: str = "") -> str:
        path = "apps/" + quote(mapping.app_name(service), safe="")
        return path + "/" + quote(instance_id, safe="") if instance_id else path

    async def register(self, service: Service, instance: ServiceInstance, ttl_seconds: float | None = None) -> None:
        self._check_write(service, instance)
        doc = mapping.to_eureka(instance)
        if service.protocol != "http":
            doc["metadata"].setdefault("protocol", service.protocol)
        doc["leaseInfo"]["durationInSecs"] = round(ttl_seconds or self.lease_s)
        doc["leaseInfo"]["renewalIntervalInSecs"] = round(self.renew_interval_s)
        resp = await self._send("POST", self._path(service.name), json={"instance": doc})
        if resp.status_code not in (200, 204):
            raise self._refused(f"{service.name}/{instance.id}", resp)
        self._own[(service.name, instance.id)] = doc
        self._applied(service, instance)

    async def deregister(self, service: str, instance_id: str) -> bool:
        self._own.pop((service, instance_id), None)
        resp = await self._send("DELETE", self._path(service, instance_id))
        if resp.status_code not in (200, 404):
            raise self._refused(f"to cancel {service}/{instance_id}", resp)
        self._dropped(service, instance_id)
        return resp.status_code == 200

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        """A renewal; a 404 (the server evicted it) registers the instance again, as Eureka clients do."""
        resp = await self._send("PUT", self._path(service, instance_id))
        if resp.status_code == 404 and (doc := self._own.get((service, instance_id))) is not None:
            resp = await self._send("POST", self._path(service), json={"instance": doc})
            return resp.status_code in (200, 204)
        return resp.status_code == 200


__all__ = ["EurekaClusterRegistry", "Mirror"]
