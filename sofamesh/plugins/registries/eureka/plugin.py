"""Entry point of the ``eureka`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.eureka.api import EurekaRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import Registry, RegistryContext, RegistryFactory

_OPTIONS = ("prefix", "address", "max_lease_s", "reap_interval_s", "shared")


class EurekaRegistryFactory:
    """Options: ``prefix`` (``/eureka``, on Pilot's API port), ``address`` (a port of its own as
    well, e.g. ``127.0.0.1:8761``; default none), ``max_lease_s`` (caps the clients'
    ``leaseInfo.durationInSecs``), ``reap_interval_s`` (0.25).
    ``shared`` (``{type: etcd, endpoint, prefix}``: the registrations in etcd, for Pilot replicas)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _OPTIONS)
        max_lease = opts.get("max_lease_s")
        registry = EurekaRegistry(context.name, context.model, prefix=str(opts.get("prefix", "/eureka")),
                                  address=opts.get("address"),
                                  max_lease_s=float(max_lease) if max_lease is not None else None,
                                  reap_interval=float(opts.get("reap_interval_s", 0.25)))
        registry.share(opts.get("shared"))
        return registry


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("eureka", EurekaRegistryFactory())
