"""Entry point of the ``eureka`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.eureka.adapter import EurekaClusterRegistry
from sofamesh.plugins.registries.eureka.api import EurekaRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import Registry, RegistryContext, RegistryFactory

_OPTIONS = ("prefix", "address", "max_lease_s", "reap_interval_s", "shared")
_CLUSTER_OPTIONS = ("endpoint", "fetch_interval_s", "renewal_interval_s", "lease_s")


class EurekaRegistryFactory:
    """Options: ``prefix`` (``/eureka``, on Pilot's API port), ``address`` (a port of its own as
    well, e.g. ``127.0.0.1:8761``; default none), ``max_lease_s`` (caps the clients'
    ``leaseInfo.durationInSecs``), ``reap_interval_s`` (0.25).
    ``shared`` (``{type: etcd, endpoint, prefix}``: the registrations in etcd, for Pilot replicas)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _OPTIONS)
        max_lease = opts.get("max_lease_s")
        registry = EurekaRegistry(
            context.name,
            context.model,
            prefix=str(opts.get("prefix", "/eureka")),
            address=opts.get("address"),
            max_lease_s=float(max_lease) if max_lease is not None else None,
            reap_interval=float(opts.get("reap_interval_s", 0.25)),
        )
        registry.share(opts.get("shared"))
        return registry


class EurekaClusterRegistryFactory:
    """An existing Eureka server (``adapter.py``). Options: ``endpoint``
    (``http://127.0.0.1:8761/eureka``), ``fetch_interval_s`` (30: Eureka's
    ``registryFetchIntervalSeconds``), ``renewal_interval_s`` (30) and ``lease_s`` (90: for what Pilot
    registers there)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _CLUSTER_OPTIONS)
        return EurekaClusterRegistry(
            context.name,
            str(opts.get("endpoint", "http://127.0.0.1:8761/eureka")),
            fetch_interval_s=float(opts.get("fetch_interval_s", 30)),
            renewal_interval_s=float(opts.get("renewal_interval_s", 30)),
            lease_s=float(opts.get("lease_s", 90)),
        )


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("eureka", EurekaRegistryFactory())
    catalog.add("eureka-cluster", EurekaClusterRegistryFactory())
