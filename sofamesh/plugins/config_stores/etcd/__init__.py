"""The ``etcd`` config store: policy resources as keys in etcd v3, shared by Pilot replicas."""

from __future__ import annotations

from sofamesh.plugins.config_stores.etcd.store import EtcdConfigStore

__all__ = ["EtcdConfigStore"]
