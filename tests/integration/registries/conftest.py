from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registries.servers import EtcdServer, ZooKeeperServer


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(tmp_path / "zk")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    yield server
    server.stop()
