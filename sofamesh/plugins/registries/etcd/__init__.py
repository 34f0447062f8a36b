"""The ``etcd`` registry: instances as keys under a prefix in etcd v3, kept alive by a lease."""

from __future__ import annotations

from sofamesh.plugins.registries.etcd.store import EtcdRegistry

__all__ = ["EtcdRegistry"]
