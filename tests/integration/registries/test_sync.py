"""Two-way registry sync ZooKeeper (Dubbo layout) <-> etcd <-> embedded, through a real Pilot process
with real ZooKeeper and etcd servers: add, change weight, delete on each side; no loops, no
duplicates, equal final states; a ZooKeeper restart in the middle loses nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kazoo.client import KazooClient

from sofamesh.plugins.registries.zookeeper.urls import java_encode
from tests.integration.registries.servers import EtcdServer, PilotWithConfig, ZooKeeperServer, wait_for

SVC = "com.example.SyncService"
PREFIX = "/mesh/"


def dubbo_url(port: int, weight: int) -> str:
    return (f"dubbo://127.0.0.1:{port}/{SVC}?anyhost=true&application=java-app&dubbo=2.0.2&dynamic=true"
            f"&interface={SVC}&methods=hello&pid=7&side=provider&timestamp=1700000000000&version=1.0.0"
            f"&weight={weight}")


def etcd_put(etcd: EtcdServer, instance_id: str, port: int, weight: int) -> None:
    value = {"service": {"name": SVC, "protocol": "dubbo", "ports": [20880], "metadata": {}},
             "instance": {"service": SVC, "id": instance_id, "address": "127.0.0.1", "port": port,
                          "weight": weight, "labels": {}, "version": "1.0.0", "group": "", "health": "healthy"}}
    httpx.post(f"{etcd.endpoint}/v3/kv/put", timeout=5, json={
        "key": base64.b64encode(f"{PREFIX}{SVC}/{instance_id}".encode()).decode(),
        "value": base64.b64encode(json.dumps(value).encode()).decode()}).raise_for_status()


def etcd_delete(etcd: EtcdServer, instance_id: str) -> None:
    httpx.post(f"{etcd.endpoint}/v3/kv/deleterange", timeout=5, json={
        "key": base64.b64encode(f"{PREFIX}{SVC}/{instance_id}".encode()).decode()}).raise_for_status()


@pytest.fixture
def pilot(tmp_path: Path, zookeeper: ZooKeeperServer, etcd: EtcdServer) -> Iterator[PilotWithConfig]:
    registries = [
        {"name": "embedded", "writable": True},
        {"name": "zk", "type": "zookeeper", "options": {"hosts": zookeeper.hosts, "layout": "dubbo",
                                                          "session_timeout_s": 4}},
        {"name": "etcd", "type": "etcd", "options": {"endpoint": etcd.endpoint, "prefix": PREFIX}},
    ]
    sync = {"pairs": [{"from": "zk", "to": "etcd", "two_way": True},
                      {"from": "etcd", "to": "embedded", "two_way": True}], "resync_interval_s": 1}
    proc = PilotWithConfig(tmp_path / "pilot", registries, sync)
    proc.start()
    yield proc
    proc.stop()


def states(pilot: PilotWithConfig) -> dict[str, dict[str, tuple[int, int]]]:
    """registry -> instance id -> (port, weight) for the test service."""
    view = pilot.registry_view()
    return {reg: {i: (d["port"], d["weight"]) for i, d in svcs.get(SVC, {}).items()} for reg, svcs in view.items()}


def converged(pilot: PilotWithConfig, expected: dict[str, tuple[int, int]]) -> bool:
    got = states(pilot)
    return all(got[reg] == expected for reg in ("zk", "etcd", "embedded"))


def test_two_way_sync_between_zookeeper_etcd_and_embedded_converges_without_loops_or_losses(
        pilot: PilotWithConfig, zookeeper: ZooKeeperServer, etcd: EtcdServer) -> None:
    # A long session that outlives the restart, and a client that keeps reconnecting while ZooKeeper is
    # down (kazoo's default retry policy gives up, and the session is then lost on a busy machine).
    java = KazooClient(hosts=zookeeper.hosts, timeout=30.0, connection_retry={"max_tries": -1, "max_delay": 1.0})
    java.start(timeout=10)
    providers = f"/dubbo/{SVC}/providers"
    try:
        # add on each side
        java.create(f"{providers}/{java_encode(dubbo_url(20880, 100))}", b"127.0.0.1", ephemeral=True,
                    makepath=True)
        etcd_put(etcd, "etcd-1", 20881, 10)
        httpx.put(f"{pilot.api_url}/v1/services/{SVC}/instances/emb-1", timeout=5, json={
            "address": "127.0.0.1", "port": 20882, "weight": 5, "protocol": "dubbo", "version": "1.0.0",
        }).raise_for_status()
        expected = {"127.0.0.1:20880": (20880, 100), "etcd-1": (20881, 10), "emb-1": (20882, 5)}
        wait_for(lambda: converged(pilot, expected), what=f"every registry holds {expected}")
        # no duplicates in the mesh model: a copy is hidden behind its native
        model = pilot.get(f"/v1/services/{SVC}/instances")["instances"]
        assert sorted((i["id"], i["origin"]) for i in model) == [
            ("127.0.0.1:20880", "zk"), ("emb-1", "embedded"), ("etcd-1", "etcd")]
        # the copies in ZooKeeper are Dubbo provider nodes: 3 children, one per instance
        assert len(java.get_children(providers)) == 3

        # update weight on each side
        java.delete(f"{providers}/{java_encode(dubbo_url(20880, 100))}")
        java.create(f"{providers}/{java_encode(dubbo_url(20880, 60))}", b"127.0.0.1", ephemeral=True)
        etcd_put(etcd, "etcd-1", 20881, 20)
        httpx.put(f"{pilot.api_url}/v1/services/{SVC}/instances/emb-1", timeout=5, json={
            "address": "127.0.0.1", "port": 20882, "weight": 7, "protocol": "dubbo", "version": "1.0.0",
        }).raise_for_status()
        expected = {"127.0.0.1:20880": (20880, 60), "etcd-1": (20881, 20), "emb-1": (20882, 7)}
        wait_for(lambda: converged(pilot, expected), what=f"weights updated everywhere: {expected}")

        # no loop: once converged, passes write nothing more
        before = pilot.get("/debug/sync")
        time.sleep(2.5)  # more than two periodic passes
        after = pilot.get("/debug/sync")
        assert after["passes"] > before["passes"]
        for target in ("zk", "etcd", "embedded"):
            assert after["targets"][target]["written"] == before["targets"][target]["written"], target
            assert after["targets"][target]["deleted"] == before["targets"][target]["deleted"], target
            assert after["targets"][target]["copies"] == 2, target
        assert after["pending"] == 0

        # lag: one change, from when a watch saw it to the end of the pass that copied it, is at
        # least the pass's settle delay (50 ms) and at most the time this test saw go by
        changed_at = time.monotonic()
        etcd_put(etcd, "etcd-1", 20881, 21)
        expected = {**expected, "etcd-1": (20881, 21)}
        wait_for(lambda: converged(pilot, expected), what=f"the new weight everywhere: {expected}")
        lag = pilot.get("/debug/sync")
        window_ms = (time.monotonic() - changed_at) * 1000
        assert lag["passes"] > after["passes"]
        assert 50 <= lag["last_lag_ms"] <= window_ms, (lag["last_lag_ms"], window_ms)
        assert lag["last_lag_ms"] <= lag["max_lag_ms"]

        # ZooKeeper restarts; meanwhile etcd gains an instance
        zookeeper.stop()
        wait_for(lambda: pilot.get("/debug/sync")["targets"]["zk"]["stale"], what="zk marked stale")
        assert states(pilot)["zk"] == expected  # kept, not emptied, during the outage
        etcd_put(etcd, "etcd-2", 20883, 3)
        time.sleep(5)  # longer than Pilot's ZooKeeper session timeout
        zookeeper.start()
        expected = {**expected, "etcd-2": (20883, 3)}
        wait_for(lambda: converged(pilot, expected), timeout=40, what=f"recovered after the restart: {expected}")
        wait_for(lambda: len(java.get_children(providers)) == 4, what="4 provider nodes in ZooKeeper")

        # delete on each side
        java.delete(f"{providers}/{java_encode(dubbo_url(20880, 60))}")
        etcd_delete(etcd, "etcd-1")
        httpx.delete(f"{pilot.api_url}/v1/services/{SVC}/instances/emb-1", timeout=5).raise_for_status()
        expected = {"etcd-2": (20883, 3)}
        wait_for(lambda: converged(pilot, expected), what=f"deletions propagated: {expected}")
        assert len(java.get_children(providers)) == 1
    finally:
        java.stop()
        java.close()
