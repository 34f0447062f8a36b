"""The ``zookeeper`` registry: the Dubbo and SOFA RPC provider layouts in a ZooKeeper ensemble."""

from __future__ import annotations

from sofamesh.plugins.registries.zookeeper.store import ZookeeperRegistry

__all__ = ["ZookeeperRegistry"]
