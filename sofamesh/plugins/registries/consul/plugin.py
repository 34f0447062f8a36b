"""Entry point of the ``consul`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.consul.adapter import ConsulClusterRegistry
from sofamesh.plugins.registries.consul.api import ConsulRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import Registry, RegistryContext, RegistryFactory

_OPTIONS = ("address", "datacenter", "node", "node_address", "reap_interval_s", "shared")
_CLUSTER_OPTIONS = ("endpoint", "datacenter", "token", "wait_s", "deregister_critical_after_s")


class ConsulRegistryFactory:
    """Options: ``address`` (``127.0.0.1:8500``: Consul clients use the path root, so Consul has a
    port of its own), ``datacenter`` (``dc1``), ``node`` (``sofamesh-pilot``), ``node_address``
    (``127.0.0.1``: the agent's address, and a service's when it registers none), ``reap_interval_s``.
    ``shared`` (``{type: etcd, endpoint, prefix}``: the registrations in etcd, for Pilot replicas)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _OPTIONS)
        registry = ConsulRegistry(
            context.name,
            context.model,
            address=str(opts.get("address", "127.0.0.1:8500")),
            datacenter=str(opts.get("datacenter", "dc1")),
            node=str(opts.get("node", "sofamesh-pilot")),
            node_address=str(opts.get("node_address", "127.0.0.1")),
            reap_interval=float(opts.get("reap_interval_s", 0.25)),
        )
        registry.share(opts.get("shared"))
        return registry


class ConsulClusterRegistryFactory:
    """An existing Consul cluster (``adapter.py``). Options: ``endpoint`` (``http://127.0.0.1:8500``, an
    agent of the cluster), ``datacenter`` (the agent's), ``token`` (sent as ``X-Consul-Token``),
    ``wait_s`` (30: the blocking queries' ``wait``), ``deregister_critical_after_s`` (60: for what
    Pilot registers there with a TTL)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _CLUSTER_OPTIONS)
        return ConsulClusterRegistry(
            context.name,
            str(opts.get("endpoint", "http://127.0.0.1:8500")),
            datacenter=str(opts.get("datacenter", "")),
            token=str(opts.get("token", "")),
            wait_s=float(opts.get("wait_s", 30)),
            deregister_after_s=float(opts.get("deregister_critical_after_s", 60)),
        )


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("consul", ConsulRegistryFactory())
    catalog.add("consul-cluster", ConsulClusterRegistryFactory())
