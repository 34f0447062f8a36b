"""Nacos naming instances <-> mesh model instances (pure: no I/O).

The one place where Nacos names, metadata and health become services, labels and EDS health:

==============  ==================================================  ==============================
model           from a Nacos instance                               to a Nacos host
==============  ==================================================  ==============================
service         ``serviceName`` in namespace ``public`` and group   listed in ``public`` /
                ``DEFAULT_GROUP``; otherwise ``group:serviceName``  ``DEFAULT_GROUP`` by its name
                (``namespace:group:serviceName`` outside public);   (Dubbo services also as
                Dubbo's ``providers:iface:version:group`` ->        ``providers:iface:version:
                ``iface``                                           group``)
id              ``ip:port`` (``@cluster`` outside ``DEFAULT``;      ``instanceId``
                ``:version:group`` for Dubbo names)
labels          ``metadata``, plus ``nacos.cluster`` /               ``metadata``
                ``nacos.group`` / ``nacos.namespace`` when not      (Dubbo names: with
                the default (Dubbo names: the URL parameters as     ``interface``, ``path``,
                the ZooKeeper Dubbo layout reads them)              ``category``, ``protocol``)
version, group  ``metadata.version`` / ``metadata.group`` (Dubbo:   in ``metadata``
                from the service name, else ``version`` /
                ``default.version`` ...)
weight          ``weight`` rounded, 1..128 (Dubbo names:            ``weight`` (Dubbo names: 1,
                ``metadata.weight``, default 100, times it)         the weight in ``metadata``)
health          ``healthy`` and ``enabled`` -> healthy, else         ``healthy``
                unhealthy (Dubbo names: also ``enabled=false`` /
                ``disabled=true`` in metadata); an ephemeral
                instance without a beat for 15 s is unhealthy,
                for 30 s gone
protocol        ``metadata.protocol`` when the mesh knows it        -
                (Dubbo names: ``dubbo``), else ``http``
==============  ==================================================  ==============================

A Dubbo provider registered the way Dubbo's NacosRegistry does it (service
``providers:<interface>:<version>:<group>``, its URL's parameters as metadata) is read by
``registries/dubbo_params.py``, as the ZooKeeper Dubbo layout is, so it is the same instance of the
same service whichever of the two registries it came through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, Service, ServiceInstance, known_protocols
from sofamesh.plugins.registries.dubbo_params import DEFAULT_WEIGHT, dubbo_fields

DEFAULT_NAMESPACE = "public"
DEFAULT_GROUP = "DEFAULT_GROUP"
DEFAULT_CLUSTER = "DEFAULT"
GROUP_SEP = "@@"
_BAD_ID = re.compile(r"[^A-Za-z0-9._:@\-]")


@dataclass(frozen=True, slots=True)
class NacosName:
    """Where a service lives in Nacos."""

    namespace: str
    group: str
    name: str

    @property
    def grouped(self) -> str:
        return f"{self.group}{GROUP_SEP}{self.name}"

    @property
    def dubbo(self) -> tuple[str, str, str] | None:
        """Dubbo's ``providers:iface:version:group`` -> (iface, version, group)."""
        parts = self.name.split(":")
        if len(parts) >= 2 and parts[0] == "providers" and parts[1]:
            return parts[1], parts[2] if len(parts) > 2 else "", ":".join(parts[3:])
        return None

    @property
    def service(self) -> str:
        """The mesh service name."""
        dubbo = self.dubbo
        if dubbo is not None:
            return dubbo[0]
        if self.namespace != DEFAULT_NAMESPACE:
            return f"{self.namespace}:{self.group}:{self.name}"
        if self.group != DEFAULT_GROUP:
            return f"{self.group}:{self.name}"
        return self.name


def nacos_name(service_name: str, group: str = "", namespace: str = "") -> NacosName:
    """``serviceName`` (maybe ``GROUP@@name``), ``groupName``, ``namespaceId`` as a client sends them."""
    if not service_name:
        raise ConfigError("serviceName", "Param 'serviceName' is required.")
    if GROUP_SEP in service_name:
        group, _, service_name = service_name.partition(GROUP_SEP)
    ns = namespace if namespace and namespace not in ("public", "default") else DEFAULT_NAMESPACE
    return NacosName(ns, group or DEFAULT_GROUP, service_name)


def _bool(value: object, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() == "true"


def metadata_of(raw: object) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        text = raw
        try:
            raw = json.loads(text)
        except ValueError:  # Nacos also accepts k=v,k2=v2
            return dict(p.split("=", 1) for p in text.split(",") if "=" in p)
    if not isinstance(raw, Mapping):
        raise ConfigError("metadata", "must be a JSON object")
    return {str(k): str(v) for k, v in raw.items() if v is not None}


def from_nacos(where: NacosName, params: Mapping[str, Any], registry: str) -> tuple[Service, ServiceInstance]:
    """A registration (query parameters or a beat's JSON) -> (service, instance)."""
    ip = str(params.get("ip") or "")
    if not ip:
        raise ConfigError("ip", "Param 'ip' is required.")
    try:
        port = int(params.get("port") or 0)
    except (TypeError, ValueError):
        raise ConfigError("port", f"Param 'port' is not a number: {params.get('port')!r}") from None
    try:
        weight_f = float(params.get("weight") or 1.0)
    except (TypeError, ValueError):
        raise ConfigError("weight", f"Param 'weight' is not a number: {params.get('weight')!r}") from None
    cluster = str(params.get("clusterName") or params.get("cluster") or DEFAULT_CLUSTER)
    meta = metadata_of(params.get("metadata"))
    healthy = _bool(params.get("healthy"), True)
    enabled = _bool(params.get("enabled", params.get("enable")), True)
    labels = dict(meta)
    if cluster != DEFAULT_CLUSTER:
        labels["nacos.cluster"] = cluster
    if where.group != DEFAULT_GROUP:
        labels["nacos.group"] = where.group
    if where.namespace != DEFAULT_NAMESPACE:
        labels["nacos.namespace"] = where.namespace
    version, group = meta.get("version", ""), meta.get("group", "")
    iid = f"{ip}:{port}"
    if cluster != DEFAULT_CLUSTER:
        iid += f"@{cluster}"
    protocol = meta.get("protocol", "http")
    weight: float = weight_f
    dubbo = where.dubbo
    if dubbo is not None:
        fields = dubbo_fields(meta)
        labels = {k: v for k, v in labels.items() if k not in meta or k in fields.labels}
        version, group = dubbo[1] or fields.version, dubbo[2] or fields.group
        iid += f":{version}:{group}"
        protocol = meta.get("protocol", "dubbo")
        weight = fields.weight * weight_f if weight_f > 0 else 0
        enabled = enabled and fields.enabled
    if protocol not in known_protocols():
        protocol = "http"
    name = where.service
    svc = Service(name=name, protocol=protocol, ports=(port,) if 1 <= port <= 65535 else ())
    inst = ServiceInstance(
        service=name, id=_BAD_ID.sub("-", iid), address=ip, port=port,
        weight=max(1, min(128, round(weight))), labels=labels, version=version, group=group,
        health=Health.HEALTHY if healthy and enabled and weight_f > 0 else Health.UNHEALTHY, origin=registry)
    return svc, inst


def to_host(inst: ServiceInstance, where: NacosName, wire: Mapping[str, Any] | None = None,
            ephemeral: bool = True) -> dict[str, Any]:
    """A mesh instance as a host of ``instance/list`` (a Nacos-registered one as it registered)."""
    wire = wire or {}
    cluster = str(wire.get("clusterName") or inst.labels.get("nacos.cluster") or DEFAULT_CLUSTER)
    meta = {k: v for k, v in inst.labels.items() if not k.startswith("nacos.")}
    weight = float(wire.get("weight") or inst.weight)
    if "metadata" in wire:
        meta = metadata_of(wire["metadata"])
    else:
        if inst.version:
            meta.setdefault("version", inst.version)
        if inst.group:
            meta.setdefault("group", inst.group)
        dubbo = where.dubbo
        if dubbo is not None:  # as Dubbo's NacosRegistry writes it, so its consumers can build the URL
            meta.update({"interface": dubbo[0], "path": dubbo[0], "category": "providers"})
            meta.setdefault("protocol", "dubbo")
            meta.setdefault("side", "provider")
            if inst.weight != DEFAULT_WEIGHT:
                meta["weight"] = str(inst.weight)
            weight = float(wire.get("weight") or 1.0)
    healthy = inst.health is Health.HEALTHY
    return {
        "instanceId": f"{inst.address}#{inst.port}#{cluster}#{where.grouped}",
        "ip": inst.address, "port": inst.port, "weight": weight if weight > 0 else 1.0,
        "healthy": healthy, "enabled": _bool(wire.get("enabled", wire.get("enable")), True),
        "ephemeral": ephemeral, "clusterName": cluster, "serviceName": where.grouped, "metadata": meta,
        "instanceHeartBeatInterval": 5000, "instanceHeartBeatTimeOut": 15000, "ipDeleteTimeout": 30000,
    }


def matches(inst: ServiceInstance, where: NacosName) -> bool:
    """Whether ``inst`` of ``where.service`` is one of the hosts of the Nacos service ``where``."""
    dubbo = where.dubbo
    if dubbo is not None:
        _iface, version, group = dubbo
        return inst.version == version and inst.group == group
    return True


__all__ = ["DEFAULT_CLUSTER", "DEFAULT_GROUP", "DEFAULT_NAMESPACE", "NacosName", "from_nacos", "matches",
           "metadata_of", "nacos_name", "to_host"]
