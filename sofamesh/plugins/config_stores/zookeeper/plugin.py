"""Entry point of the ``zookeeper`` config store plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.config_stores.zookeeper.store import ZookeeperConfigStore

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.policy.store import ConfigStoreContext, ConfigStoreFactory


class ZookeeperConfigStoreFactory:
    """Options: ``hosts`` (``127.0.0.1:2181``), ``root`` (``/sofamesh/policy``),
    ``session_timeout_s`` (10)."""

    def create(self, context: ConfigStoreContext) -> ZookeeperConfigStore:
        opts = context.check_options(("hosts", "root", "session_timeout_s"))
        return ZookeeperConfigStore(
            context.name,
            str(opts.get("hosts", "127.0.0.1:2181")),
            str(opts.get("root", "/sofamesh/policy")),
            float(opts.get("session_timeout_s", 10.0)),
        )


@hookimpl
def pilot_register_config_stores(catalog: Catalog[ConfigStoreFactory]) -> None:
    catalog.add("zookeeper", ZookeeperConfigStoreFactory())
