"""Entry point of the ``zookeeper`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.errors import ConfigError
from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.zookeeper.store import ZookeeperRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import RegistryContext, RegistryFactory

_KNOWN = ("hosts", "layout", "root", "session_timeout_s", "application", "registrations", "leases_root")


class ZookeeperRegistryFactory:
    """Options: ``hosts`` (``"127.0.0.1:2181"``; required), ``layout`` (``dubbo`` | ``sofa``),
    ``root`` (``/dubbo`` | ``/sofa-rpc``), ``session_timeout_s`` (10), ``application`` (``sofamesh``),
    ``registrations`` (``ephemeral``: they live with this Pilot's session; ``persistent``: they outlive
    it, as Pilot replicas need), ``leases_root`` (``/sofamesh-leases<root>``: TTL leases of persistent
    registrations)."""

    def create(self, context: RegistryContext) -> ZookeeperRegistry:
        opts = check_options(context, _KNOWN)
        hosts = opts.get("hosts")
        if not isinstance(hosts, str) or not hosts:
            raise ConfigError(f"registries.{context.name}.options.hosts", "required: \"HOST:PORT[,HOST:PORT]\"")
        layout = str(opts.get("layout", "dubbo"))
        if layout not in ("dubbo", "sofa"):
            raise ConfigError(f"registries.{context.name}.options.layout", f"must be dubbo or sofa, got {layout!r}")
        root = opts.get("root")
        registrations = str(opts.get("registrations", "ephemeral"))
        if registrations not in ("ephemeral", "persistent"):
            raise ConfigError(f"registries.{context.name}.options.registrations",
                              f"must be ephemeral or persistent, got {registrations!r}")
        leases_root = opts.get("leases_root")
        return ZookeeperRegistry(context.name, hosts, layout, None if root is None else str(root),
                                 float(opts.get("session_timeout_s", 10.0)), str(opts.get("application", "sofamesh")),
                                 persistent=registrations == "persistent",
                                 leases_root=None if leases_root is None else str(leases_root))


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("zookeeper", ZookeeperRegistryFactory())
