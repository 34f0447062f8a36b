"""The ``zookeeper`` config store: policy resources as znodes in ZooKeeper, shared by Pilot replicas."""

from __future__ import annotations

from sofamesh.plugins.config_stores.zookeeper.store import ZookeeperConfigStore

__all__ = ["ZookeeperConfigStore"]
