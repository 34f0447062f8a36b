"""The ``files`` config store: a directory of Kubernetes YAML, watched by polling."""

from __future__ import annotations

from sofamesh.plugins.config_stores.files.store import FilesConfigStore

__all__ = ["FilesConfigStore"]
