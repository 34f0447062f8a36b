"""Entry point of the ``embedded`` config store plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.config_stores.embedded.store import EmbeddedConfigStore

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.policy.store import ConfigStoreContext, ConfigStoreFactory


class EmbeddedConfigStoreFactory:
    """Options: ``file`` (``policy-store.json``, relative to Pilot's ``data_dir``)."""

    def create(self, context: ConfigStoreContext) -> EmbeddedConfigStore:
        opts = context.check_options(("file",))
        return EmbeddedConfigStore(context.name, context.data_dir / str(opts.get("file", "policy-store.json")))


@hookimpl
def pilot_register_config_stores(catalog: Catalog[ConfigStoreFactory]) -> None:
    catalog.add("embedded", EmbeddedConfigStoreFactory())
