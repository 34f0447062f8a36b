"""Entry point of the ``consul`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.consul.api import ConsulRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import Registry, RegistryContext, RegistryFactory

_OPTIONS = ("address", "datacenter", "node", "node_address", "reap_interval_s", "shared")


class ConsulRegistryFactory:
    """Options: ``address`` (``127.0.0.1:8500``: Consul clients use the path root, so Consul has a
    port of its own), ``datacenter`` (``dc1``), ``node`` (``sofamesh-pilot``), ``node_address``
    (``127.0.0.1``: the agent's address, and a service's when it registers none), ``reap_interval_s``.
    ``shared`` (``{type: etcd, endpoint, prefix}``: the registrations in etcd, for Pilot replicas)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _OPTIONS)
        registry = ConsulRegistry(context.name, context.model, address=str(opts.get("address", "127.0.0.1:8500")),
                                  datacenter=str(opts.get("datacenter", "dc1")),
                                  node=str(opts.get("node", "sofamesh-pilot")),
                                  node_address=str(opts.get("node_address", "127.0.0.1")),
                                  reap_interval=float(opts.get("reap_interval_s", 0.25)))
        registry.share(opts.get("shared"))
        return registry


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("consul", ConsulRegistryFactory())
