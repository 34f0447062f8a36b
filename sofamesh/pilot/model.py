"""The mesh model: services and their instances, merged from every registry, with a change index.

Owns the Service / ServiceInstance value types, their validation (errors name the offending field
as a :class:`~sofamesh.core.errors.ConfigError` path) and the merged, indexed view that the xDS
generators and the Open Service Registry API read. It does no I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from sofamesh.core.errors import ConfigError

PROTOCOLS: tuple[str, ...] = ("http", "grpc", "bolt", "dubbo", "triple", "tcp")
# The port a service is addressed on when nobody declared one: the protocol's customary port.
DEFAULT_SERVICE_PORTS: Mapping[str, int] = MappingProxyType(
    {"http": 80, "grpc": 80, "triple": 50051, "bolt": 12200, "dubbo": 20880, "tcp": 80}
)
# Protocols a plugin added (its xDS generators register it): name -> customary port.
_PLUGIN_PROTOCOLS: dict[str, int] = {}


def register_protocol(name: str, default_port: int) -> None:
    """Let services of protocol ``name`` into the model (a protocol plugin's Pilot side calls this,
    e.g. through ``sofamesh.pilot.xds.rpc.rpc_generators``), so a new protocol needs no Pilot change."""
    if name not in PROTOCOLS:
        _PLUGIN_PROTOCOLS[name] = default_port


def known_protocols() -> tuple[str, ...]:
    return (*PROTOCOLS, *sorted(_PLUGIN_PROTOCOLS))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,252}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")
_EMPTY: Mapping[str, str] = MappingProxyType({})
SOURCE_LABEL = "sofamesh.source"
"""Label of an instance copied by registry sync: the name of the registry it is native to."""


class Health(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


def _check_name(value: object, path: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(path, f"invalid {what} {value!r} (letters, digits and . _ : - ; "
                                "starts with a letter or digit)")
    return value


def _check_port(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(path, f"must be an integer port 1..65535, got {value!r}")
    return value


def _check_str_map(value: object, path: str) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be an object of strings, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigError(f"{path}.{k}", f"must be a string, got {type(v).__name__}")
    return MappingProxyType(dict(sorted(value.items())))


@dataclass(frozen=True, slots=True)
class Service:
    """A named service: its protocol, the ports clients address it on, free-form metadata."""

    name: str
    protocol: str = "http"
    ports: tuple[int, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        _check_name(self.name, "service", _NAME, "service name")
        if not isinstance(self.protocol, str) or (self.protocol not in PROTOCOLS
                                                   and self.protocol not in _PLUGIN_PROTOCOLS):
            raise ConfigError("protocol",
                              f"unknown protocol {self.protocol!r} (known: {', '.join(known_protocols())})")
        ports = tuple(_check_port(p, f"ports[{i}]") for i, p in enumerate(self.ports))
        if not ports:
            ports = (DEFAULT_SERVICE_PORTS.get(self.protocol) or _PLUGIN_PROTOCOLS[self.protocol],)
        object.__setattr__(self, "ports", ports)
        object.__setattr__(self, "metadata", _check_str_map(self.metadata, "metadata"))

    @property
    def port(self) -> int:
        """The primary service port (the first declared one)."""
        return self.ports[0]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "ports": list(self.ports),
                "metadata": dict(self.metadata)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Service:
        return cls(name=data["name"], protocol=data.get("protocol", "http"),
                   ports=tuple(data.get("ports", ())), metadata=data.get("metadata", {}))


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One endpoint of a service, as one registry (``origin``) knows it.

    Locality comes from the labels ``region``, ``zone`` and ``sub_zone``.
    """

    service: str
    id: str
    address: str
    port: int
    weight: int = 1
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    version: str = ""
    group: str = ""
    health: Health = Health.HEALTHY
    origin: str = ""

    def __post_init__(self) -> None:
        _check_name(self.service, "service", _NAME, "service name")
        _check_name(self.id, "id", _ID, "instance id")
        if not isinstance(self.address, str) or not self.address:
            raise ConfigError("address", f"must be an IP address or host name, got {self.address!r}")
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.\-]{0,252})$", self.address):
                raise ConfigError("address", f"not an IP address or host name: {self.address!r}") from None
        _check_port(self.port, "port")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or not 1 <= self.weight <= 128:
            raise ConfigError("weight", f"must be an integer 1..128, got {self.weight!r}")
        object.__setattr__(self, "labels", _check_str_map(self.labels, "labels"))
        for name in ("version", "group", "origin"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(name, f"must be a string, got {type(getattr(self, name)).__name__}")
        try:
            object.__setattr__(self, "health", Health(self.health))
        except ValueError:
            raise ConfigError("health", f"must be one of {', '.join(h.value for h in Health)}, "
                                        f"got {self.health!r}") from None

    @property
    def locality(self) -> tuple[str, str, str]:
        """(region, zone, sub_zone) from the labels: Istio's ``istio-locality`` (``region.zone.subzone``)
        when set, else each part from ``region`` / ``zone`` / ``sub_zone`` or Istio's topology labels
        (``topology.kubernetes.io/region``, ``topology.kubernetes.io/zone``, ``topology.istio.io/subzone``)."""
        labels = self.labels
        whole = labels.get("istio-locality")
        if whole:
            region, zone, sub_zone = ([*whole.replace("/", ".").split(".", 2), "", ""])[:3]
            return region, zone, sub_zone
        return (labels.get("region") or labels.get("topology.kubernetes.io/region", ""),
                labels.get("zone") or labels.get("topology.kubernetes.io/zone", ""),
                labels.get("sub_zone") or labels.get("topology.istio.io/subzone", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "id": self.id, "address": self.address, "port": self.port,
                "weight": self.weight, "labels": dict(self.labels), "version": self.version,
                "group": self.group, "health": self.health.value, "origin": self.origin}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceInstance:
        return cls(service=data["service"], id=data["id"], address=data["address"], port=data["port"],
                   weight=data.get("weight", 1), labels=data.get("labels", {}),
                   version=data.get("version", ""), group=data.get("group", ""),
                   health=data.get("health", "healthy"), origin=data.get("origin", ""))


def parse_ttl(value: object, path: str = "ttl_seconds") -> float | None:
    """A lease length in seconds, or ``None`` (no lease) for ``None`` and 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(path, f"must be a number of seconds, got {value!r}")
    if value < 0 or value > 86400:
        raise ConfigError(path, f"must be between 0 and 86400, got {value!r}")
    return float(value) or None


def _without_copies(found: list[ServiceInstance]) -> list[ServiceInstance]:
    """Drop the sync copies of an instance whose native (same id, from its source) is present."""
    natives = {(i.origin, i.id) for i in found if i.labels.get(SOURCE_LABEL, i.origin) == i.origin}
    if len(natives) == len(found):
        return found
    return [i for i in found
            if i.labels.get(SOURCE_LABEL, i.origin) == i.origin or (i.labels[SOURCE_LABEL], i.id) not in natives]


ChangeListener = Callable[[frozenset[str]], None]


class InstanceSource(Protocol):
    """What the model reads of a registry (:class:`~sofamesh.pilot.registry.Registry` is one)."""

    def services(self) -> Mapping[str, Service]: ...

    def instances(self, service: str) -> Sequence[ServiceInstance]: ...


class MeshModel:
    """Services and instances merged from every registry, in registry order.

    ``index`` grows by one on every change that altered something; ``service_index(name)`` is the
    index at which that service last changed (Consul-style blocking queries wait on these).
    """

    def __init__(self, registries: Sequence[InstanceSource] = ()) -> None:
        self._registries: list[InstanceSource] = list(registries)
        self._services: dict[str, Service] = {}
        self._instances: dict[str, tuple[ServiceInstance, ...]] = {}
        self._service_index: dict[str, int] = {}
        self.index = 1
        self._listeners: list[ChangeListener] = []
        self._changed: asyncio.Future[None] | None = None
        # labels laid over merged instances (which instances run a sidecar: pilot/sidecars.py)
        self.overlay: Callable[[str, str], Mapping[str, str] | None] | None = None

    # -- reading -------------------------------------------------------------------------------
    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def service(self, name: str) -> Service | None:
        return self._services.get(name)

    def instances(self, name: str) -> tuple[ServiceInstance, ...]:
        return self._instances.get(name, ())

    def service_index(self, name: str) -> int:
        """The index at which ``name`` last changed (also for a service that went away)."""
        return self._service_index.get(name, 0)

    # -- changing ------------------------------------------------------------------------------
    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def add_registry(self, registry: InstanceSource) -> None:
        self._registries.append(registry)

    def refresh(self, names: Iterable[str] | None = None) -> frozenset[str]:
        """Re-read ``names`` (every service when ``None``) from the registries; return what changed."""
        if names is None:
            wanted: set[str] = set(self._services)
            for reg in self._registries:
                wanted.update(reg.services())
        else:
            wanted = set(names)
        changed: set[str] = set()
        for name in wanted:
            service: Service | None = None
            found: list[ServiceInstance] = []
            for reg in self._registries:
                svc = reg.services().get(name)
                if svc is None:
                    continue
                if service is None:
                    service = svc
                found.extend(reg.instances(name))
            insts = tuple(sorted(_without_copies(found), key=lambda i: (i.origin, i.id)))
            if self.overlay is not None:
                insts = tuple(map(self._overlaid, insts))
            if service is None:
                if name in self._services:
                    del self._services[name]
                    self._instances.pop(name, None)
                    changed.add(name)
                continue
            if self._services.get(name) != service or self._instances.get(name) != insts:
                self._services[name] = service
                self._instances[name] = insts
                changed.add(name)
        if changed:
            self.index += 1
            for name in changed:
                self._service_index[name] = self.index
            frozen = frozenset(changed)
            for listener in self._listeners:
                listener(frozen)
            if self._changed is not None and not self._changed.done():
                self._changed.set_result(None)
            self._changed = None
        return frozenset(changed)

    def _overlaid(self, inst: ServiceInstance) -> ServiceInstance:
        assert self.overlay is not None
        extra = self.overlay(inst.id, inst.address)
        if not extra or all(k in inst.labels for k in extra):
            return inst
        return dataclasses.replace(inst, labels={**extra, **inst.labels})  # registration labels win

    async def wait(self, service: str | None, index: int, timeout: float) -> int:
        """Block until ``service`` (any service when ``None``) changed after ``index``, or ``timeout``
        seconds passed; return the current index of what was watched."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)

        def current() -> int:
            return self.index if service is None else self.service_index(service)

        while current() <= index:
            left = deadline - loop.time()
            if left <= 0:
                break
            if self._changed is None:
                self._changed = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), left)
            except TimeoutError:
                break
        return current()


__all__ = [
    "DEFAULT_SERVICE_PORTS",
    "PROTOCOLS",
    "SOURCE_LABEL",
    "Health",
    "InstanceSource",
    "MeshModel",
    "Service",
    "ServiceInstance",
    "known_protocols",
    "parse_ttl",
    "register_protocol",
]
