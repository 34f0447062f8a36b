"""The CA's state in a store Pilot replicas share (a real etcd, a real ZooKeeper): one root however
many replicas start together, and every replica signs with it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from sofamesh.pilot.security.shared_storage import EtcdStorage, ZookeeperStorage, security_storage
from sofamesh.pilot.security.storage import SecretStorage
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.registries.servers import EtcdServer, ZooKeeperServer, etcd, zookeeper

__all__ = ["etcd", "zookeeper"]


def _storage_options(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        return {"endpoint": server.endpoint, "prefix": "/test/security/"}
    zk: ZooKeeperServer = request.getfixturevalue("zookeeper")
    return {"hosts": zk.hosts, "root": "/test/security"}


@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_create_is_won_by_exactly_one_writer(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    opts = _storage_options(kind, request)
    stores: list[SecretStorage] = [security_storage(kind, opts, tmp_path) for _ in range(6)]
    assert all(isinstance(s, EtcdStorage if kind == "etcd" else ZookeeperStorage) for s in stores)
    won: list[bool] = [False] * len(stores)
    go = threading.Barrier(len(stores))

    def race(i: int) -> None:
        go.wait()
        won[i] = stores[i].create("root", f"writer {i}".encode(), private=True)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert won.count(True) == 1
    winner = won.index(True)
    assert {s.read("root") for s in stores} == {f"writer {winner}".encode()}
    stores[0].write("revoked", b"[1]")
    assert stores[-1].read("revoked") == b"[1]"
    assert stores[1].read("missing") is None
    with pytest.raises(ValueError, match="bad blob name"):
        stores[0].read("../x")
    for s in stores:
        close = getattr(s, "close", None)
        if close is not None:
            close()


@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_replicas_started_together_share_one_root(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    opts = _storage_options(kind, request)
    config = {"ca": {"storage": {"type": kind, "options": opts}}}
    pilots = [PilotProcess(tmp_path / f"p{i}", config=config, ready_timeout=90) for i in range(3)]
    starters = [threading.Thread(target=p.start) for p in pilots]
    try:
        for t in starters:
            t.start()
        for t in starters:
            t.join(60)
        cas = [p.get("/debug/ca") for p in pilots]
        signers = {ca["ca"]["signer"]["serial"] for ca in cas}
        assert len(signers) == 1, cas
        assert all(ca["ca"]["storage"].startswith(kind) for ca in cas)
        # a replica restarted later reads the same root instead of making one
        pilots[0].stop()
        pilots[0].start()
        assert pilots[0].get("/debug/ca")["ca"]["signer"]["serial"] in signers
    finally:
        for p in pilots:
            p.stop()
