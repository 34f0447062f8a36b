"""Entry point of the ``etcd`` config store plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.config_stores.etcd.store import EtcdConfigStore

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.policy.store import ConfigStoreContext, ConfigStoreFactory


class EtcdConfigStoreFactory:
    """Options: ``endpoint`` (``http://127.0.0.1:2379``), ``prefix`` (``/sofamesh/policy/``)."""

    def create(self, context: ConfigStoreContext) -> EtcdConfigStore:
        opts = context.check_options(("endpoint", "prefix"))
        return EtcdConfigStore(context.name, str(opts.get("endpoint", "http://127.0.0.1:2379")),
                               str(opts.get("prefix", "/sofamesh/policy/")))


@hookimpl
def pilot_register_config_stores(catalog: Catalog[ConfigStoreFactory]) -> None:
    catalog.add("etcd", EtcdConfigStoreFactory())
