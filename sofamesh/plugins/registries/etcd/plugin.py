"""Entry point of the ``etcd`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.etcd.store import EtcdRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import RegistryContext, RegistryFactory

_KNOWN = ("endpoint", "prefix", "lease_ttl_s", "leases")


class EtcdRegistryFactory:
    """Options: ``endpoint`` (``http://127.0.0.1:2379``), ``prefix`` (``/sofamesh/registry/``),
    ``lease_ttl_s`` (10), ``leases`` (``pilot``: our writes live while this Pilot keeps its lease;
    ``instance``: each registration stands on its own, as Pilot replicas need)."""

    def create(self, context: RegistryContext) -> EtcdRegistry:
        opts = check_options(context, _KNOWN)
        leases = str(opts.get("leases", "pilot"))
        if leases not in ("pilot", "instance"):
            from sofamesh.core.errors import ConfigError

            raise ConfigError(f"registries.{context.name}.options.leases", f"{leases!r} is not pilot or instance")
        return EtcdRegistry(context.name, str(opts.get("endpoint", "http://127.0.0.1:2379")),
                            str(opts.get("prefix", "/sofamesh/registry/")), int(opts.get("lease_ttl_s", 10)),
                            instance_leases=leases == "instance")


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("etcd", EtcdRegistryFactory())
