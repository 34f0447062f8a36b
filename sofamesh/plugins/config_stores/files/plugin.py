"""Entry point of the ``files`` config store plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sofamesh.core.errors import ConfigError
from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.config_stores.files.store import FilesConfigStore

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.policy.store import ConfigStoreContext, ConfigStoreFactory


class FilesConfigStoreFactory:
    """Options: ``path`` (the directory, required; relative to Pilot's working directory),
    ``interval_s`` (1.0: how often it is polled)."""

    def create(self, context: ConfigStoreContext) -> FilesConfigStore:
        opts = context.check_options(("path", "interval_s"))
        if not opts.get("path"):
            raise ConfigError("config_store.options.path", "required: the directory of YAML files")
        interval = opts.get("interval_s", 1.0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0.05 <= interval <= 3600:
            raise ConfigError("config_store.options.interval_s", f"must be 0.05..3600 seconds, got {interval!r}")
        return FilesConfigStore(context.name, Path(str(opts["path"])), float(interval))


@hookimpl
def pilot_register_config_stores(catalog: Catalog[ConfigStoreFactory]) -> None:
    catalog.add("files", FilesConfigStoreFactory())
