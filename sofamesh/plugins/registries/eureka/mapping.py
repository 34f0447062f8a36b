"""Eureka instance documents <-> mesh model instances (pure: no I/O).

The one place where Eureka's names, metadata and status become services, labels and EDS health:

=================  =============================================  ===============================
model              from an Eureka instance                        to an Eureka instance
=================  =============================================  ===============================
service            ``app`` lower-cased (``HELLO-SVC`` ->           ``app``/``vipAddress``: the
                   ``hello-svc``)                                 name upper-cased / as is
id                 ``instanceId`` (characters the model refuses   ``instanceId``
                   become ``-``)
address, port      ``ipAddr``; ``port`` if enabled, else          ``ipAddr``/``hostName``,
                   ``securePort``                                 ``port`` enabled
labels             ``metadata`` (minus ``management.port``)       ``metadata``
version, group     ``metadata.version`` / ``metadata.group``      in ``metadata``
weight             ``metadata.weight`` (1..128), default 1        ``metadata.weight`` when not 1
health             ``UP`` -> healthy; ``OUT_OF_SERVICE`` ->       healthy -> ``UP``, draining ->
                   draining; anything else -> unhealthy           ``OUT_OF_SERVICE``, else ``DOWN``
protocol           ``metadata.protocol`` when the mesh knows it,  -
                   otherwise ``http``
=================  =============================================  ===============================

Documents use Eureka's JSON shape (``{"$": 8080, "@enabled": "true"}`` for a port); :func:`to_xml`
writes the same tree as the XML Eureka answers when a client does not ask for JSON.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, Service, ServiceInstance, known_protocols

DEFAULT_LEASE_S = 90  # leaseInfo.durationInSecs when the client sends none (Eureka's default)
DEFAULT_RENEWAL_S = 30
DATA_CENTER_CLASS = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
STATUSES = ("UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN")
_BAD_ID = re.compile(r"[^A-Za-z0-9._:@\-]")
_NOT_LABELS = frozenset({"management.port", "@class"})


def service_name(app: str) -> str:
    """Eureka upper-cases application names; the mesh keeps the lower-case name Spring uses."""
    return app.strip().lower()


def app_name(service: str) -> str:
    return service.upper()


def instance_id(raw: str) -> str:
    iid = _BAD_ID.sub("-", raw.strip())
    return iid.lstrip("-._:@") or "instance"


def health_of(status: str) -> Health:
    if status == "UP":
        return Health.HEALTHY
    if status == "OUT_OF_SERVICE":
        return Health.DRAINING
    return Health.UNHEALTHY


def status_of(health: Health) -> str:
    return {Health.HEALTHY: "UP", Health.DRAINING: "OUT_OF_SERVICE"}.get(health, "DOWN")


def effective_status(doc: Mapping[str, Any]) -> str:
    """An override (``overriddenstatus`` other than ``UNKNOWN``) wins over the reported status."""
    override = str(doc.get("overriddenstatus") or "UNKNOWN")
    return override if override != "UNKNOWN" else str(doc.get("status") or "UP")


def _port(value: Any) -> tuple[int, bool]:
    """Eureka's ``{"$": 8080, "@enabled": "true"}`` (or a bare number) -> (port, enabled)."""
    if isinstance(value, Mapping):
        raw, enabled = value.get("$"), str(value.get("@enabled", "true")).lower() == "true"
    else:
        raw, enabled = value, True
    try:
        return int(str(raw)), enabled
    except ValueError:
        return 0, False


def lease_of(doc: Mapping[str, Any]) -> float:
    info = doc.get("leaseInfo")
    if isinstance(info, Mapping):
        try:
            duration = float(info.get("durationInSecs") or 0)
        except (TypeError, ValueError):
            duration = 0
        if duration > 0:
            return duration
    return float(DEFAULT_LEASE_S)


def from_eureka(app: str, doc: Mapping[str, Any], registry: str) -> tuple[Service, ServiceInstance]:
    """A registered instance document -> (service, instance); ``ConfigError`` names a bad field."""
    for key in ("hostName", "ipAddr", "app", "dataCenterInfo"):  # what Eureka's InstanceInfo requires
        if not doc.get(key):
            raise ConfigError(f"instance.{key}", "is required")
    if str(doc["app"]).upper() != app.upper():
        raise ConfigError("instance.app", f"{doc['app']!r} is not the application {app!r} of the URL")
    port, enabled = _port(doc.get("port", 0))
    if not enabled or not port:
        port, enabled = _port(doc.get("securePort", 0))
    if not enabled or not 1 <= port <= 65535:
        raise ConfigError("instance.port", "no enabled port 1..65535")
    meta_raw = doc.get("metadata") or {}
    if not isinstance(meta_raw, Mapping):
        raise ConfigError("instance.metadata", "must be an object")
    meta = {str(k): str(v) for k, v in meta_raw.items() if k not in _NOT_LABELS and v is not None}
    name = service_name(app)
    protocol = meta.get("protocol", "http")
    if protocol not in known_protocols():
        protocol = "http"
    weight = meta.get("weight", "")
    inst = ServiceInstance(
        service=name, id=instance_id(str(doc.get("instanceId") or doc["hostName"])),
        address=str(doc["ipAddr"]), port=port,
        weight=int(weight) if weight.isdigit() and 1 <= int(weight) <= 128 else 1,
        labels=meta, version=meta.get("version", ""), group=meta.get("group", ""),
        health=health_of(effective_status(doc)), origin=registry)
    return Service(name=name, protocol=protocol, ports=(port,)), inst


def to_eureka(inst: ServiceInstance, now_ms: int | None = None) -> dict[str, Any]:
    """A mesh instance (registered anywhere) as an Eureka instance document."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    meta = dict(inst.labels)
    if inst.version:
        meta.setdefault("version", inst.version)
    if inst.group:
        meta.setdefault("group", inst.group)
    if inst.weight != 1:
        meta.setdefault("weight", str(inst.weight))
    status = status_of(inst.health)
    base = f"http://{inst.address}:{inst.port}/"
    return {
        "instanceId": inst.id, "hostName": inst.address, "app": app_name(inst.service),
        "ipAddr": inst.address, "status": status, "overriddenstatus": "UNKNOWN",
        "port": {"$": inst.port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1, "dataCenterInfo": {"@class": DATA_CENTER_CLASS, "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": DEFAULT_RENEWAL_S, "durationInSecs": DEFAULT_LEASE_S,
                      "registrationTimestamp": now_ms, "lastRenewalTimestamp": now_ms,
                      "evictionTimestamp": 0, "serviceUpTimestamp": now_ms},
        "metadata": meta or {"@class": "java.util.Collections$EmptyMap"},
        "homePageUrl": base, "statusPageUrl": base + "info", "healthCheckUrl": base + "health",
        "vipAddress": inst.service, "secureVipAddress": inst.service,
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": str(now_ms), "lastDirtyTimestamp": str(now_ms),
    }


def apps_hashcode(statuses: Iterable[str]) -> str:
    """Eureka's ``apps__hashcode``: ``STATUS_count_`` for each status present, statuses sorted."""
    counts = Counter(statuses)
    return "".join(f"{s}_{counts[s]}_" for s in sorted(counts))


def applications(apps: Mapping[str, list[dict[str, Any]]], version: int, hashcode: str) -> dict[str, Any]:
    return {"applications": {"versions__delta": str(version), "apps__hashcode": hashcode,
                             "application": [{"name": name, "instance": insts}
                                             for name, insts in sorted(apps.items())]}}


def to_xml(tag: str, value: Any) -> str:
    """Eureka's XML for one JSON-shaped value: ``@key`` -> attribute, ``$`` -> text, list -> repeats."""
    if isinstance(value, list):
        return "".join(to_xml(tag, v) for v in value)
    if isinstance(value, Mapping):
        attrs = "".join(f" {k[1:]}={quoteattr(str(v))}" for k, v in value.items() if k.startswith("@"))
        if "$" in value:
            return f"<{tag}{attrs}>{escape(str(value['$']))}</{tag}>"
        inner = "".join(to_xml(k, v) for k, v in value.items() if not k.startswith("@"))
        return f"<{tag}{attrs}>{inner}</{tag}>"
    if isinstance(value, bool):
        value = str(value).lower()
    return f"<{tag}>{escape(str(value))}</{tag}>"


def parse_xml_instance(text: str) -> dict[str, Any]:
    """An ``<instance>`` registration body (Java clients' XML) in the JSON shape."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ConfigError("instance", f"not valid XML: {exc}") from None

    def walk(node: ET.Element) -> Any:
        children = list(node)
        if not children:
            if node.attrib:
                return {**{f"@{k}": v for k, v in node.attrib.items()}, "$": node.text or ""}
            return node.text or ""
        out: dict[str, Any] = {f"@{k}": v for k, v in node.attrib.items()}
        for child in children:
            out[child.tag] = walk(child)
        return out

    doc = walk(root)
    return doc if isinstance(doc, dict) else {}


__all__ = ["DEFAULT_LEASE_S", "STATUSES", "app_name", "applications", "apps_hashcode", "effective_status",
           "from_eureka", "health_of", "instance_id", "lease_of", "parse_xml_instance", "service_name",
           "status_of", "to_eureka", "to_xml"]
