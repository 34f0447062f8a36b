"""Entry point of the ``etcd`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.etcd.store import EtcdRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import RegistryContext, RegistryFactory

_KNOWN = ("endpoint", "prefix", "lease_ttl_s")


class EtcdRegistryFactory:
    """Options: ``endpoint`` (``http://127.0.0.1:2379``), ``prefix`` (``/sofamesh/registry/``),
    ``lease_ttl_s`` (10)."""

    def create(self, context: RegistryContext) -> EtcdRegistry:
        opts = check_options(context, _KNOWN)
        return EtcdRegistry(context.name, str(opts.get("endpoint", "http://127.0.0.1:2379")),
                            str(opts.get("prefix", "/sofamesh/registry/")), int(opts.get("lease_ttl_s", 10)))


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("etcd", EtcdRegistryFactory())
