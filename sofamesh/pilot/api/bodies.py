"""Validation of Open Service Registry API inputs. Errors are ConfigError whose path is the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Service, ServiceInstance, parse_ttl

INSTANCE_FIELDS = ("address", "port", "protocol", "weight", "labels", "version", "group", "ttl_seconds",
                   "health", "service_ports", "service_metadata")
MAX_WAIT_S = 300.0
_WAIT = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


_SERVICE_FIELDS = {"ports": "service_ports", "metadata": "service_metadata"}


def _body_path(path: str) -> str:
    """A Service field path as the API body spells it (``ports[0]`` -> ``service_ports[0]``)."""
    for model_name, body_name in _SERVICE_FIELDS.items():
        if path == model_name or path.startswith((model_name + "[", model_name + ".")):
            return body_name + path[len(model_name):]
    return path


def instance_from_body(service: str, instance_id: str, body: object, origin: str,
                       existing: Service | None) -> tuple[Service, ServiceInstance, float | None]:
    """The Service, ServiceInstance and lease TTL a ``PUT .../instances/{id}`` body describes."""
    if not isinstance(body, Mapping):
        raise ConfigError("body", "must be a JSON object")
    unknown = sorted(set(body) - set(INSTANCE_FIELDS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown field (known: {', '.join(INSTANCE_FIELDS)})")
    for required in ("address", "port"):
        if required not in body:
            raise ConfigError(required, "is required")
    protocol = body.get("protocol", existing.protocol if existing else "http")
    ports = body.get("service_ports", list(existing.ports) if existing else [])
    if not isinstance(ports, list):
        raise ConfigError("service_ports", f"must be a list of ports, got {type(ports).__name__}")
    metadata = body.get("service_metadata", dict(existing.metadata) if existing else {})
    try:
        svc = Service(name=service, protocol=protocol, ports=tuple(ports), metadata=metadata)
    except ConfigError as exc:
        raise ConfigError(_body_path(exc.path), exc.message) from None
    inst = ServiceInstance(
        service=service, id=instance_id, address=body["address"], port=body["port"],
        weight=body.get("weight", 1), labels=body.get("labels", {}), version=body.get("version", ""),
        group=body.get("group", ""), health=body.get("health", "healthy"), origin=origin,
    )
    return svc, inst, parse_ttl(body.get("ttl_seconds"))


def parse_wait(value: str | None) -> float:
    """Consul-style ``wait``: ``10``, ``10s``, ``500ms``, ``1m``; at most 300 s."""
    if value is None or value == "":
        return 0.0
    m = _WAIT.match(value.strip())
    if not m:
        raise ConfigError("wait", f"expected seconds such as 10, 10s, 500ms or 1m, got {value!r}")
    n = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return min(n, MAX_WAIT_S)


def parse_index(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ConfigError("index", f"must be a non-negative integer, got {value!r}")
    return int(value)


def check_id(value: str, field: str) -> str:
    """Path segments are validated like the model validates names."""
    probe: dict[str, Any] = {"service": "s", "id": "i", "address": "127.0.0.1", "port": 1}
    probe["service" if field == "service" else "id"] = value
    ServiceInstance(**probe)
    return value


__all__ = ["INSTANCE_FIELDS", "check_id", "instance_from_body", "parse_index", "parse_wait"]
