"""The ``embedded`` registry: in process, persisted to a file under Pilot's data directory."""

from __future__ import annotations

from sofamesh.plugins.registries.embedded.store import EmbeddedRegistry, atomic_write

__all__ = ["EmbeddedRegistry", "atomic_write"]
