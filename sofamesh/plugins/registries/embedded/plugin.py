"""Entry point of the ``embedded`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.registries.embedded.store import EmbeddedRegistry

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import RegistryContext, RegistryFactory


class EmbeddedRegistryFactory:
    """Options: ``file`` (default ``<data_dir>/embedded-registry.json``), ``reap_interval_s`` (0.25)."""

    def create(self, context: RegistryContext) -> EmbeddedRegistry:
        opts = dict(context.options)
        path = context.data_dir / str(opts.pop("file", "embedded-registry.json"))
        interval = float(opts.pop("reap_interval_s", 0.25))
        if opts:
            from sofamesh.core.errors import ConfigError

            raise ConfigError(f"registries.{context.name}", f"unknown option(s) {', '.join(sorted(opts))} "
                              "(known: file, reap_interval_s)")
        return EmbeddedRegistry(context.name, path, reap_interval=interval)


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("embedded", EmbeddedRegistryFactory())
