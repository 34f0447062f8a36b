"""ServiceEntry and WorkloadEntry as services and instances of the mesh model: a read-only
instance source (what the model reads of a registry) fed from the policy model.

As in Aeraki's samples, a ServiceEntry's ``interface`` annotation names the RPC interface its host
stands for (that interface is the service's name, the host another name for it); the
WorkloadEntries its ``workloadSelector`` picks in its namespace are its instances, their ports
taken by the ServiceEntry's port names. STATIC and DNS entries list ``endpoints`` instead; a DNS
entry without endpoints is reached at its host.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.policy.hosts import EXPORT_METADATA, HOST_METADATA, NAMESPACE_METADATA, VIP_METADATA
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import Resource

log = logging.getLogger("sofamesh.pilot.policy")
ORIGIN = "policy"
INTERFACE_ANNOTATION = "interface"
_PROTOCOLS = {"HTTP": "http", "HTTP_PROXY": "http", "HTTP2": "grpc", "GRPC": "grpc", "GRPC-WEB": "grpc",
              "DUBBO": "dubbo", "BOLT": "bolt", "TRIPLE": "triple"}


def port_protocol(port: Mapping[str, Any]) -> str:
    """A ServiceEntry port's mesh protocol: from ``protocol``, else (TCP) from Aeraki's port name
    convention ``tcp-metaprotocol-<protocol>[-...]`` or a ``<protocol>-`` name prefix."""
    proto = str(port.get("protocol", "")).upper()
    if proto in _PROTOCOLS:
        return _PROTOCOLS[proto]
    name = str(port.get("name", "")).lower()
    if name.startswith("tcp-metaprotocol-"):
        name = name[len("tcp-metaprotocol-"):]
    head = name.split("-")[0]
    return {"dubbo": "dubbo", "bolt": "bolt", "triple": "triple", "http": "http", "grpc": "grpc",
            "http2": "grpc"}.get(head, "tcp")


def loopback_address(addresses: Sequence[Any]) -> str:
    """The first of a ServiceEntry's ``addresses`` a proxy can listen on without iptables: a single
    loopback address (``127.0.0.0/8``, ``::1``; ``/32`` or ``/128`` allowed); ``""`` when none is."""
    for a in addresses:
        try:
            net = ipaddress.ip_network(str(a), strict=True)
        except ValueError:
            continue
        if net.num_addresses == 1 and net.network_address.is_loopback:
            return str(net.network_address)
    return ""


def _locality_labels(locality: str) -> dict[str, str]:
    parts = [*locality.split("/"), "", "", ""][:3]
    return {k: v for k, v in zip(("region", "zone", "sub_zone"), parts, strict=True) if v}


class PolicyInstances:
    """Services and instances made from the accepted ServiceEntries and WorkloadEntries."""

    name = ORIGIN

    def __init__(self, policy: PolicyModel) -> None:
        self._policy = policy
        self._services: dict[str, Service] = {}
        self._instances: dict[str, tuple[ServiceInstance, ...]] = {}

    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return self._instances.get(service, ())

    def rebuild(self) -> frozenset[str]:
        """Recompute from the policy model; return the service names whose view changed."""
        services: dict[str, Service] = {}
        instances: dict[str, list[ServiceInstance]] = {}
        workloads = self._policy.resources("WorkloadEntry")
        for se in self._policy.resources("ServiceEntry"):
            try:
                self._add(se, workloads, services, instances)
            except ConfigError as exc:
                log.warning("ServiceEntry %s/%s cannot become a service: %s", se.namespace, se.name, exc)
        frozen = {n: tuple(sorted(v, key=lambda i: i.id)) for n, v in instances.items()}
        changed = {n for n in services.keys() | self._services.keys()
                   if services.get(n) != self._services.get(n) or frozen.get(n, ()) != self._instances.get(n, ())}
        self._services, self._instances = services, frozen
        return frozenset(changed)

    def _add(self, se: Resource, workloads: list[Resource], services: dict[str, Service],
             instances: dict[str, list[ServiceInstance]]) -> None:
        spec = se.spec
        ports = [p for p in spec.get("ports") or [] if isinstance(p, Mapping)]
        protocol = port_protocol(ports[0]) if ports else "http"
        numbers = tuple(int(p["number"]) for p in ports)
        interface = se.annotations.get(INTERFACE_ANNOTATION)
        for host in spec.get("hosts") or []:
            if "*" in host:
                continue
            name = interface or host
            if name in services:
                continue
            meta = {HOST_METADATA: host, NAMESPACE_METADATA: se.namespace,
                    "policy.serviceentry": f"{se.namespace}/{se.name}"}
            export = [str(e) for e in spec.get("exportTo") or ["*"]]
            if "*" not in export:  # Istio: "." its own namespace, "~" none
                meta[EXPORT_METADATA] = ",".join(se.namespace if e == "." else e for e in export)
            vip = loopback_address(spec.get("addresses") or [])
            if vip:
                meta[VIP_METADATA] = vip
            services[name] = Service(name=name, protocol=protocol, ports=numbers, metadata=meta)
            found = instances.setdefault(name, [])
            resolution = spec.get("resolution", "NONE")
            targets: list[tuple[str, Mapping[str, Any]]] = []
            if spec.get("endpoints"):
                targets = [(f"{se.name}.{se.namespace}.{i}", ep) for i, ep in enumerate(spec["endpoints"])]
            elif isinstance(spec.get("workloadSelector"), Mapping):
                want = spec["workloadSelector"].get("labels") or {}
                targets = [(f"{we.name}.{we.namespace}", we.spec) for we in workloads if we.namespace == se.namespace
                           and all((we.spec.get("labels") or {}).get(k) == v for k, v in want.items())]
            elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
                targets = [(f"{se.name}.{se.namespace}", {"address": host})]
            for ident, ep in targets:
                found.extend(self._endpoint(name, ident, ep, ports))

    @staticmethod
    def _endpoint(service: str, ident: str, ep: Mapping[str, Any], ports: list[Mapping[str, Any]]
                  ) -> list[ServiceInstance]:
        address = str(ep.get("address", ""))
        if not address or address.startswith("unix://"):
            return []
        labels = {**_locality_labels(str(ep.get("locality", ""))), **(ep.get("labels") or {})}
        weight = min(max(int(ep.get("weight") or 1), 1), 128)
        own_ports = ep.get("ports") or {}
        out = []
        for p in ports or [{"number": 80, "name": "http"}]:
            port = own_ports.get(p.get("name")) or p.get("targetPort") or p["number"]
            suffix = f"-{p['number']}" if len(ports) > 1 else ""
            out.append(ServiceInstance(service=service, id=f"{ident}{suffix}", address=address, port=int(port),
                                       weight=weight, labels=labels, version=str(labels.get("version", "")),
                                       origin=ORIGIN))
        return out


__all__ = ["INTERFACE_ANNOTATION", "ORIGIN", "PolicyInstances", "loopback_address", "port_protocol"]
