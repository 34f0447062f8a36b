"""Host names as policy resources use them, resolved to the services of the mesh model.

A registry service ``reviews`` (no namespace metadata: namespace ``default``) is the host
``reviews``, ``reviews.default``, ``reviews.default.svc`` and ``reviews.default.svc.cluster.local``;
an RPC service (``com.example.EchoService:1.0``, a Dubbo interface) is its own name; a service a
ServiceEntry made is also each of the entry's hosts. A short host in a resource resolves in the
resource's namespace, as in Istio. Subsets select instances by their registry labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE

CLUSTER_DOMAIN = "svc.cluster.local"
NAMESPACE_METADATA = "namespace"
"""Service metadata naming the namespace of a registry service (``default`` without it)."""
HOST_METADATA = "policy.host"
"""Service metadata of a ServiceEntry's service: the entry host it was made for."""
EXPORT_METADATA = "policy.exportTo"
"""Service metadata of a ServiceEntry's service whose ``exportTo`` limits it: the namespaces that
see it, comma-separated (``~``: none); absent, every namespace does."""
VIP_METADATA = "vip"
"""Service metadata: the loopback address (``127.0.0.0/8``, ``::1``) a TCP service is addressed on
through its proxy (:mod:`sofamesh.pilot.xds.tcp_routes`); a ServiceEntry's first such ``addresses``
entry, or set by whoever registers the service."""


class ServiceView(Protocol):
    def services(self) -> Mapping[str, Service]: ...


def fqdn(host: str, namespace: str) -> str:
    """Istio's short-name rule: a host without a dot is ``<host>.<namespace>.svc.cluster.local``."""
    if "." in host or "*" in host or ":" in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def is_kubernetes_style(name: str) -> bool:
    """A lowercase single-label name (``reviews``): it gets the namespace forms as hosts."""
    return "." not in name and ":" not in name and name == name.lower()


def service_hosts(service: Service) -> tuple[str, ...]:
    """Every host name that reaches ``service``."""
    hosts = [service.name]
    if is_kubernetes_style(service.name):
        ns = service.metadata.get(NAMESPACE_METADATA, DEFAULT_NAMESPACE)
        hosts += [f"{service.name}.{ns}", f"{service.name}.{ns}.svc", f"{service.name}.{ns}.{CLUSTER_DOMAIN}"]
    extra = service.metadata.get(HOST_METADATA)
    if extra and extra not in hosts:
        hosts.append(extra)
    return tuple(hosts)


class HostIndex:
    """host -> service name over a snapshot of the mesh model's services."""

    def __init__(self, mesh: ServiceView) -> None:
        self._index: dict[str, str] = {}
        for name, svc in sorted(mesh.services().items()):
            for h in service_hosts(svc):
                self._index.setdefault(h, name)

    def service_for(self, host: str, namespace: str = DEFAULT_NAMESPACE) -> str | None:
        """The service a resource in ``namespace`` means by ``host``; ``None`` when no registry knows it."""
        if is_kubernetes_style(host):  # a short host: only the service of that namespace
            return self._index.get(fqdn(host, namespace))
        return self._index.get(host)

    def hosts(self) -> Iterable[str]:
        return self._index.keys()


def selects(labels: Mapping[str, str], instance: ServiceInstance) -> bool:
    """A subset's ``labels`` select ``instance`` when each one is among its labels (``version`` also
    matches the instance's version attribute, which some registries carry outside the labels)."""
    for k, v in labels.items():
        have = instance.labels.get(k)
        if have is None and k == "version":
            have = instance.version or None
        if have != v:
            return False
    return True


def subset_instances(instances: Iterable[ServiceInstance], labels: Mapping[str, str]) -> list[ServiceInstance]:
    return [i for i in instances if selects(labels, i)]


__all__ = ["CLUSTER_DOMAIN", "EXPORT_METADATA", "HOST_METADATA", "NAMESPACE_METADATA", "VIP_METADATA", "HostIndex",
           "fqdn", "selects", "service_hosts", "subset_instances"]
