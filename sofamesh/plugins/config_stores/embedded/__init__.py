"""The ``embedded`` config store: policy resources in a JSON file in Pilot's data directory."""

from __future__ import annotations

from sofamesh.plugins.config_stores.embedded.store import EmbeddedConfigStore

__all__ = ["EmbeddedConfigStore"]
