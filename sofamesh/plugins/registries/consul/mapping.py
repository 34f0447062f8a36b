"""Consul service definitions <-> mesh model instances (pure: no I/O).

The one place where Consul's names, tags, meta and check states become services, labels and EDS
health:

==============  ===============================================  ================================
model           from a Consul service definition                 to a Consul catalog entry
==============  ===============================================  ================================
service         ``Name``                                         ``ServiceName``
id              ``ID`` (default ``Name``)                        ``ServiceID``
address, port   ``Address`` (default the agent's), ``Port``      ``ServiceAddress``, ``ServicePort``
labels          ``Meta``, and each tag ``k=v`` as ``k: v``       ``ServiceMeta`` = labels;
                (Spring Cloud Consul's older metadata); other    ``ServiceTags``: the tags it
                tags as ``consul.tag.<tag>: ""``                 registered with, else ``[]``
version, group  ``version`` / ``group`` labels                   in ``ServiceMeta``
weight          ``Weights.Passing`` (1..128), default 1          ``ServiceWeights``
health          every check passing or warning -> healthy;       ``passing`` / ``critical``
                one critical -> unhealthy (a TTL check not
                passed within its TTL is critical; HTTP and
                TCP checks run by Pilot, ``checks.py``)
protocol        ``Meta.protocol`` when the mesh knows it, the    -
                tag ``secure=true`` -> ``http``, else ``http``
==============  ===============================================  ================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, Service, ServiceInstance, known_protocols

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
MIN_INTERVAL_S = 1.0  # Consul raises a shorter check interval to one second
DEFAULT_TIMEOUT_S = 10.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BAD_ID = re.compile(r"[^A-Za-z0-9._:@\-]")


def lower_keys(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Consul reads field names case-insensitively (``Name``, ``name``); ``Meta`` contents keep theirs."""
    return {str(k).lower(): v for k, v in doc.items()}


def duration(value: object, path: str) -> float:
    """A Go duration (``10s``, ``1m30s`` is not accepted by old agents either: one unit) or seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1e9 if value > 1e6 else float(value)  # Consul's JSON takes nanoseconds
    m = _DURATION.match(str(value or "").strip())
    if not m:
        raise ConfigError(path, f"invalid duration {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def go_duration(text: str) -> float:
    """Seconds of a duration as Go's ``time.ParseDuration`` reads it (``300ms``, ``1m30s``, ``-1s``,
    ``0``); ``ValueError`` for anything else (a bare number, an unknown unit)."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _GO_PART.match(body, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return -total if text.startswith("-") else total


def _counter(c: Mapping[str, Any], key: str, path: str, default: int = 0) -> int:
    raw = c.get(key)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ConfigError(path, f"must be a whole number >= 0, got {raw!r}")
    return raw


def _run_fields(c: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """What Pilot needs to run an HTTP or TCP check (``checks.py``)."""
    if not c.get("interval"):
        raise ConfigError("Check.Interval", "Interval must be > 0 for HTTP and TCP checks")
    fields: dict[str, Any] = {
        "interval_s": max(MIN_INTERVAL_S, duration(c["interval"], "Check.Interval")),
        "timeout_s": duration(c["timeout"], "Check.Timeout") if c.get("timeout") else DEFAULT_TIMEOUT_S,
        "success_before_passing": _counter(c, "successbeforepassing", "Check.SuccessBeforePassing"),
    }
    critical = _counter(c, "failuresbeforecritical", "Check.FailuresBeforeCritical")
    fields["failures_before_critical"] = critical
    fields["failures_before_warning"] = _counter(c, "failuresbeforewarning", "Check.FailuresBeforeWarning", critical)
    if kind == "http":
        url = str(c["http"])
        if not url.startswith(("http://", "https://")):
            raise ConfigError("Check.HTTP", f"{url!r} is not an http:// or https:// URL")
        header = c.get("header") or {}
        if not isinstance(header, Mapping):
            raise ConfigError("Check.Header", "must be an object of header names to lists of values")
        fields.update(http=url, method=str(c.get("method") or "GET"), header=dict(header),
                      body=str(c.get("body") or ""), tls_skip_verify=bool(c.get("tlsskipverify")))
    else:
        host, sep, port = str(c["tcp"]).rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError("Check.TCP", f"{c['tcp']!r} is not host:port")
        fields["tcp"] = str(c["tcp"])
    return fields


def checks_of(service_id: str, svc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checks of a service definition, named as Consul names them (``service:<id>[:<n>]``). TTL,
    HTTP and TCP checks start ``critical`` (Consul's default) unless ``Status`` says otherwise; HTTP
    and TCP checks carry what ``checks.py`` needs to run them."""
    raw: list[Any] = []
    if svc.get("check"):
        raw.append(svc["check"])
    raw.extend(svc.get("checks") or [])
    out = []
    for n, check in enumerate(raw, 1):
        if not isinstance(check, Mapping):
            raise ConfigError("Checks", "each check must be an object")
        c = lower_keys(check)
        cid = str(c.get("checkid") or c.get("id") or
                  (f"service:{service_id}" if len(raw) == 1 else f"service:{service_id}:{n}"))
        ttl = duration(c["ttl"], "Check.TTL") if c.get("ttl") else None
        dereg = (duration(c["deregistercriticalserviceafter"], "Check.DeregisterCriticalServiceAfter")
                 if c.get("deregistercriticalserviceafter") else None)
        kind = "ttl" if ttl else "http" if c.get("http") else "tcp" if c.get("tcp") else "script"
        status = str(c.get("status") or (PASSING if kind == "script" else CRITICAL))
        if status not in (PASSING, WARNING, CRITICAL):
            raise ConfigError("Check.Status", f"{status!r} is not passing, warning or critical")
        doc = {"CheckID": cid, "Name": str(c.get("name") or f"Service '{service_id}' check"),
               "Type": kind, "Status": status, "Notes": str(c.get("notes") or ""), "Output": "",
               "ttl_s": ttl, "deregister_s": dereg}
        if kind in ("http", "tcp"):
            doc.update(_run_fields(c, kind))
        out.append(doc)
    return out


def labels_of(tags: list[str], meta: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for tag in tags:
        k, eq, v = tag.partition("=")
        if eq and k:
            labels[k] = v
        elif tag:
            labels[f"consul.tag.{tag}"] = ""
    labels.update({str(k): str(v) for k, v in meta.items()})
    return labels


def health_of(checks: list[dict[str, Any]]) -> Health:
    return Health.UNHEALTHY if any(c["Status"] == CRITICAL for c in checks) else Health.HEALTHY


def from_consul(body: Mapping[str, Any], agent_address: str, registry: str) -> tuple[Service, ServiceInstance,
                                                                                      list[dict[str, Any]]]:
    """An ``agent/service/register`` body -> (service, instance, checks)."""
    svc = lower_keys(body)
    name = str(svc.get("name") or "")
    if not name:
        raise ConfigError("Name", "Missing service name")
    sid = str(svc.get("id") or name)
    try:
        port = int(svc.get("port") or 0)
    except (TypeError, ValueError):
        raise ConfigError("Port", f"not a number: {svc.get('port')!r}") from None
    tags = [str(t) for t in (svc.get("tags") or [])]
    meta = svc.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise ConfigError("Meta", "must be an object")
    checks = checks_of(sid, svc)
    labels = labels_of(tags, meta)
    weights = lower_keys(svc.get("weights") or {})
    passing = weights.get("passing", 1)
    protocol = labels.get("protocol", "http")
    if protocol not in known_protocols():
        protocol = "http"
    if not 1 <= port <= 65535:
        raise ConfigError("Port", f"must be 1..65535 for the mesh, got {port}")
    inst = ServiceInstance(
        service=name, id=_BAD_ID.sub("-", sid), address=str(svc.get("address") or agent_address), port=port,
        weight=max(1, min(128, int(passing))) if isinstance(passing, int) else 1, labels=labels,
        version=labels.get("version", ""), group=labels.get("group", ""), health=health_of(checks),
        origin=registry)
    return Service(name=name, protocol=protocol, ports=(port,)), inst, checks


def catalog_entry(inst: ServiceInstance, node: Mapping[str, str], index: int,
                  wire: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``/v1/catalog/service/<name>`` element for ``inst``."""
    wire = wire or {}
    meta = {k: v for k, v in inst.labels.items() if not k.startswith("consul.tag.")}
    if "meta" in wire:
        meta = {str(k): str(v) for k, v in (wire["meta"] or {}).items()}
    if inst.version:
        meta.setdefault("version", inst.version)
    return {
        "ID": node["ID"], "Node": node["Node"], "Address": node["Address"], "Datacenter": node["Datacenter"],
        "TaggedAddresses": {"lan": node["Address"], "wan": node["Address"]}, "NodeMeta": {},
        "ServiceKind": "", "ServiceID": str(wire.get("id") or inst.id), "ServiceName": inst.service,
        "ServiceTags": list(wire.get("tags") or []), "ServiceAddress": inst.address, "ServiceMeta": meta,
        "ServicePort": inst.port, "ServiceWeights": {"Passing": inst.weight, "Warning": 1},
        "ServiceEnableTagOverride": False, "CreateIndex": index, "ModifyIndex": index,
    }


def agent_service(entry: Mapping[str, Any], datacenter: str) -> dict[str, Any]:
    """A catalog entry as ``/v1/agent/services`` shows it."""
    return {"ID": entry["ServiceID"], "Service": entry["ServiceName"], "Tags": entry["ServiceTags"],
            "Meta": entry["ServiceMeta"], "Port": entry["ServicePort"], "Address": entry["ServiceAddress"],
            "Weights": entry["ServiceWeights"], "EnableTagOverride": False, "Datacenter": datacenter}


__all__ = ["CRITICAL", "PASSING", "WARNING", "agent_service", "catalog_entry", "checks_of", "duration",
           "from_consul", "go_duration", "health_of", "labels_of", "lower_keys"]
