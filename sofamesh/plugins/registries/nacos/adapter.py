"""The Nacos client side: Pilot reads an existing Nacos server's naming service into the mesh model
and, as a writable registry, registers into it what registry sync copies there.

Reads are what Nacos 1.x clients do over the v1 open API: every ``poll_interval_s`` the services of
one namespace and group (``GET service/list``, page by page) and, for each, its hosts
(``GET instance/list`` with ``healthyOnly=false``). Hosts go through ``mapping.from_nacos`` (the
server side's table) as if the adapter's namespace and group were Nacos's defaults, so model names
are the bare Nacos names (a Dubbo ``providers:iface:version:group`` is the service ``iface``). No
UDP push is taken (the v1 push needs a UDP port the server can reach); a change shows within one
poll. While the server cannot be reached the last known instances are kept and ``stale`` is true.

Writes: register ``POST instance`` (ephemeral), a beat ``PUT instance/beat`` every
``beat_interval_s`` for each instance registered here (code 20404, the server no longer knows it,
registers it again, as Nacos clients do), deregister ``DELETE instance``. A mesh Dubbo service is
written with Dubbo's name ``providers:iface:version:group``. Labels travel as ``metadata``; the
instance id, which Nacos derives from ``ip#port#cluster`` itself, travels as metadata
``sofamesh.id`` and is taken back from it, so a copy read back is the same instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from sofamesh.core.errors import ConfigError, PluginError
from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.pilot.registry import Registry
from sofamesh.plugins.registries.mirrored import PolledMirror
from sofamesh.plugins.registries.nacos import mapping
from sofamesh.plugins.registries.nacos.mapping import NacosName

log = logging.getLogger("sofamesh.pilot.registry.nacos.adapter")
ID_KEY = "sofamesh.id"
_PAGE = 500
_CONCURRENT = 16
_NOT_FOUND = 20404  # a beat's answer for an instance the server does not know


def instance_of(where: NacosName, host: Mapping[str, Any], registry: str) -> tuple[Service, ServiceInstance]:
    """One host of ``instance/list`` -> (service, instance); ``ConfigError`` when unusable. ``where``
    is the Nacos name with the adapter's namespace and group (mapped as the defaults)."""
    local = NacosName(mapping.DEFAULT_NAMESPACE, mapping.DEFAULT_GROUP, where.name)
    meta = mapping.metadata_of(host.get("metadata"))
    iid = meta.pop(ID_KEY, "")
    service, inst = mapping.from_nacos(local, {**host, "metadata": meta}, registry)
    return service, replace(inst, id=iid) if iid else inst


def registration_of(service: Service, instance: ServiceInstance, where: NacosName) -> dict[str, str]:
    """The form of ``POST instance`` for ``instance`` (``where``: the adapter's namespace and group)."""
    meta = {k: v for k, v in instance.labels.items() if not k.startswith("nacos.")}
    if instance.version:
        meta.setdefault("version", instance.version)
    if instance.group:
        meta.setdefault("group", instance.group)
    if service.protocol != "http":
        meta.setdefault("protocol", service.protocol)
    name = service.name
    if service.protocol == "dubbo":
        name = f"providers:{service.name}:{instance.version}:{instance.group}"
    probe = mapping.from_nacos(
        NacosName(mapping.DEFAULT_NAMESPACE, mapping.DEFAULT_GROUP, name),
        {"ip": instance.address, "port": instance.port, "metadata": meta},
        "",
    )[1]
    if probe.id != instance.id:
        meta[ID_KEY] = instance.id
    return {
        "serviceName": f"{where.group}{mapping.GROUP_SEP}{name}",
        "groupName": where.group,
        "namespaceId": where.namespace,
        "ip": instance.address,
        "port": str(instance.port),
        "weight": str(float(instance.weight)),
        "healthy": "true" if instance.health is Health.HEALTHY else "false",
        "enabled": "true",
        "ephemeral": "true",
        "clusterName": mapping.DEFAULT_CLUSTER,
        "metadata": json.dumps(meta, sort_keys=True),
    }


def beat_of(form: Mapping[str, str]) -> dict[str, str]:
    """The parameters of ``PUT instance/beat`` for an instance registered with ``form``."""
    beat = {
        "serviceName": form["serviceName"],
        "ip": form["ip"],
        "port": int(form["port"]),
        "cluster": form["clusterName"],
        "weight": float(form["weight"]),
        "metadata": json.loads(form["metadata"]),
        "scheduled": False,
    }
    return {
        "serviceName": form["serviceName"],
        "groupName": form["groupName"],
        "namespaceId": form["namespaceId"],
        "beat": json.dumps(beat),
    }


class NacosClusterRegistry(PolledMirror, Registry):
    """An existing Nacos server, read by polling its v1 open API; writable."""

    writable = True
    server = "Nacos"

    def __init__(
        self,
        name: str,
        endpoint: str,
        namespace: str = mapping.DEFAULT_NAMESPACE,
        group: str = mapping.DEFAULT_GROUP,
        poll_interval_s: float = 10.0,
        beat_interval_s: float = 5.0,
    ) -> None:
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        if "://" not in self.endpoint:
            self.endpoint = "http://" + self.endpoint
        if not self.endpoint.endswith("/nacos"):
            self.endpoint += "/nacos"
        self.where = NacosName(namespace or mapping.DEFAULT_NAMESPACE, group or mapping.DEFAULT_GROUP, "")
        self._http = httpx.AsyncClient(base_url=self.endpoint + "/v1/ns/", timeout=httpx.Timeout(15, connect=5))
        self._init_polling(poll_interval_s, beat_interval_s)
        self.polls = 0
        self.skipped = 0
        self.reregistered = 0

    # -- reading -------------------------------------------------------------------------------
    def _scope(self) -> dict[str, str]:
        return {"namespaceId": self.where.namespace, "groupName": self.where.group}

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        resp = await self._http.get(path, params=params)
        if resp.status_code != 200:
            raise PluginError(f"GET {path}: {resp.status_code} {resp.text[:200]}")
        return resp.json()

    async def _names(self) -> list[str]:
        names: list[str] = []
        page = 1
        while True:
            doc = await self._get("service/list", {**self._scope(), "pageNo": str(page), "pageSize": str(_PAGE)})
            doms = doc.get("doms") if isinstance(doc, Mapping) else None
            if not isinstance(doms, list):
                raise PluginError('GET service/list: not a {"count": ..., "doms": [...]} document')
            names += [str(d) for d in doms]
            if len(doms) < _PAGE or len(names) >= int(doc.get("count") or 0):
                return names
            page += 1

    async def _hosts(self, name: str) -> tuple[Service | None, dict[str, ServiceInstance]]:
        params = {
            **self._scope(),
            "serviceName": f"{self.where.group}{mapping.GROUP_SEP}{name}",
            "healthyOnly": "false",
        }
        doc = await self._get("instance/list", params)
        hosts = doc.get("hosts") if isinstance(doc, Mapping) else None
        if not isinstance(hosts, list):
            raise PluginError(f'GET instance/list of {name}: not a {{"hosts": [...]}} document')
        where = replace(self.where, name=name)
        service: Service | None = None
        insts: dict[str, ServiceInstance] = {}
        for host in hosts:
            try:
                if not isinstance(host, Mapping):
                    raise ConfigError("hosts", "a host must be an object")
                svc, inst = instance_of(where, host, self.name)
            except ConfigError as exc:
                self.skipped += 1
                log.warning("registry %s: skipping a host of %s: %s", self.name, name, exc)
                continue
            service = service or svc
            insts[inst.id] = inst
        return service, insts

    async def _fetch(self, first: bool) -> set[str]:
        """One pass over the namespace and group; the model services that changed."""
        self.polls += 1
        names = await self._names()
        gate = asyncio.Semaphore(_CONCURRENT)

        async def one(name: str) -> tuple[str, Service | None, dict[str, ServiceInstance]]:
            async with gate:
                return (name, *await self._hosts(name))

        found: dict[str, tuple[Service, dict[str, ServiceInstance]]] = {}
        for _name, service, insts in await asyncio.gather(*(one(n) for n in names)):
            if service is None:
                continue
            have = found.get(service.name)  # Dubbo: several provider names, one mesh service
            if have is not None:
                insts = {**have[1], **insts}
            found[service.name] = (have[0] if have else service, insts)
        changed = set()
        for model_name in set(found) | set(self._services):
            svc, insts = found.get(model_name, (None, {}))
            if self._set(model_name, svc, insts):
                changed.add(model_name)
        return changed

    def describe(self) -> dict[str, Any]:
        return {
            "type": "nacos-cluster",
            "endpoint": self.endpoint,
            "namespace": self.where.namespace,
            "group": self.where.group,
            "stale": self.stale,
            "polls": self.polls,
            "registered": len(self._own),
            "reregistered": self.reregistered,
            "skipped": self.skipped,
            "errors": self.errors,
        }

    # -- writes --------------------------------------------------------------------------------
    async def register(self, service: Service, instance: ServiceInstance, ttl_seconds: float | None = None) -> None:
        self._check_write(service, instance)
        form = registration_of(service, instance, self.where)
        resp = await self._send("POST", "instance", data=form)
        if resp.status_code != 200:
            raise self._refused(f"{service.name}/{instance.id}", resp)
        self._own[(service.name, instance.id)] = form
        self._applied(service, instance)

    async def deregister(self, service: str, instance_id: str) -> bool:
        form = self._own.pop((service, instance_id), None)
        if form is None:
            inst = self._instances.get(service, {}).get(instance_id)
            if inst is None:
                return False
            form = registration_of(self._services[service], inst, self.where)
        keys = ("serviceName", "groupName", "namespaceId", "ip", "port", "clusterName", "ephemeral")
        resp = await self._send("DELETE", "instance", data={k: form[k] for k in keys})
        if resp.status_code != 200:
            raise self._refused(f"to deregister {service}/{instance_id}", resp)
        self._dropped(service, instance_id)
        return True

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        """A beat; an answer that the server does not know the instance registers it again."""
        form = self._own.get((service, instance_id))
        if form is None:
            return False
        resp = await self._send("PUT", "instance/beat", data=beat_of(form))
        if resp.status_code != 200:
            return False
        with contextlib.suppress(ValueError):
            answer = resp.json()
            if isinstance(answer, Mapping) and answer.get("code") == _NOT_FOUND:
                self.reregistered += 1
                resp = await self._send("POST", "instance", data=form)
        return resp.status_code == 200


__all__ = ["ID_KEY", "NacosClusterRegistry", "beat_of", "instance_of", "registration_of"]
