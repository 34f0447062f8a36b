from __future__ import annotations

from tests.integration.registries.servers import etcd, zookeeper

__all__ = ["etcd", "zookeeper"]
