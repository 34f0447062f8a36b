"""Two Pilot replicas serving the Eureka, Nacos and Consul APIs over one real etcd, or one real ZooKeeper
(``shared``): what a real
client registers through replica A is listed by replica B's clients and reaches a sidecar of B;
renewals through B keep it alive once A is gone; and its lease still runs out when nobody renews.
PyPI py-eureka-client 0.13.3, npm nacos 2.6.3, nacos-sdk-python 3.2 (Nacos 2 gRPC) and py-consul 1.8.0
(tests/conformance/registry_api_peers.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import UpstreamServer, free_port
from tests.conformance.registry_api_peers import Client, nacos_ports, require_clients
from tests.integration.registries.servers import PilotWithConfig, etcd, zookeeper
from tests.integration.xds.mesh import Sidecar, wait_for

__all__ = ["etcd", "zookeeper"]
LEASE_S = 3


class Replica:
    def __init__(self, tmp: Path, store: dict[str, str]) -> None:
        def shared(name: str) -> dict[str, str]:
            if store["type"] == "etcd":
                return {**store, "prefix": f"/served/{name}/"}
            return {**store, "root": f"/served/{name}"}

        self.consul_port, self.nacos_port = free_port(), nacos_ports()[0]
        self.pilot = PilotWithConfig(
            tmp,
            [
                {
                    "name": "eureka",
                    "options": {"max_lease_s": LEASE_S, "shared": shared("eureka")},
                },
                {
                    "name": "nacos",
                    "options": {
                        "address": f"127.0.0.1:{self.nacos_port}",
                        "beat_interval_s": 1,
                        # longer than nacos-sdk-python's redo (every 30 s) after its replica died
                        "heartbeat_timeout_s": 45,
                        "ip_delete_timeout_s": 60,
                        "shared": shared("nacos"),
                    },
                },
                {
                    "name": "consul",
                    "options": {
                        "address": f"127.0.0.1:{self.consul_port}",
                        "shared": shared("consul"),
                    },
                },
            ],
        )
        self.eureka = f"{self.pilot.api_url}/eureka/"
        self.consul = f"127.0.0.1:{self.consul_port}"
        self.nacos = f"127.0.0.1:{self.nacos_port}"

    def health(self, service: str) -> dict[str, str]:
        """instance id -> health, from this replica's Open Service Registry API."""
        resp = httpx.get(f"{self.pilot.api_url}/v1/services/{service}/instances", timeout=5)
        return {i["id"]: i["health"] for i in resp.json()["instances"]} if resp.status_code == 200 else {}


@pytest.fixture(params=["etcd", "zookeeper"])
def replicas(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Replica, Replica]]:
    require_clients(nacos_grpc=True)
    server = request.getfixturevalue(request.param)
    store = (
        {"type": "etcd", "endpoint": server.endpoint}
        if request.param == "etcd"
        else {"type": "zookeeper", "hosts": server.hosts}
    )
    a, b = Replica(tmp_path / "a", store), Replica(tmp_path / "b", store)
    try:
        a.pilot.start(timeout=60)
        b.pilot.start(timeout=60)
        yield a, b
    finally:
        a.pilot.stop()
        b.pilot.stop()


def test_eureka_registration_through_one_replica_is_served_and_renewed_by_the_other(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    with UpstreamServer("eu-shared") as up, UpstreamServer("eu-b") as up_b:
        port = int(up.address.rsplit(":", 1)[1])
        # the client is given both replicas, A first (it moves to the next when one is down)
        c1 = Client.python(
            "eureka", f"{a.eureka},{b.eureka}", "shared-eureka", "eu-1", port, "v1", tmp_path / "eu1.log"
        )
        c2 = Client.python(
            "eureka", b.eureka, "shared-eureka", "eu-2", int(up_b.address.rsplit(":", 1)[1]), "v2", tmp_path / "eu2.log"
        )
        try:
            wait_for(
                lambda: b.health("shared-eureka") == {"eu-1": "healthy", "eu-2": "healthy"}, 10, "both instances on B"
            )
            # eu-2 reached A through the shared store: a replica sees a peer's writes soon, not at once
            wait_for(
                lambda: a.health("shared-eureka") == {"eu-1": "healthy", "eu-2": "healthy"}, 10, "both instances on A"
            )
            # B's own Eureka client discovers the instance registered through A
            found = c2.ask(cmd="discover", name="shared-eureka")["instances"]
            assert {(r["id"], r["status"]) for r in found} == {("eu-1", "UP"), ("eu-2", "UP")}
            with Sidecar(b.pilot.xds_port, "shared-consumer") as sidecar:
                wait_for(lambda: up.address in sidecar.endpoints("|shared-eureka"), 20, "eu-1 in B's sidecar")
            a.pilot.stop()  # from now on every renewal of eu-1 goes to B
            time.sleep(LEASE_S + 2)
            assert b.health("shared-eureka") == {"eu-1": "healthy", "eu-2": "healthy"}, "renewals through B"
            c1.die()
            wait_for(lambda: "eu-1" not in b.health("shared-eureka"), 3 * LEASE_S + 5, "eu-1's lease run out")
            assert b.health("shared-eureka") == {"eu-2": "healthy"}
        finally:
            c1.close()
            c2.close()


def test_consul_registration_through_one_replica_is_listed_by_the_other_and_deregistered_through_it(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    c = Client.python("consul", a.consul, "shared-consul", "co-1", free_port(), "v1", tmp_path / "co.log")
    try:
        wait_for(lambda: b.health("shared-consul") == {"co-1": "healthy"}, 10, "co-1 on B")
        catalog: Any = httpx.get(f"http://{b.consul}/v1/catalog/service/shared-consul", timeout=5).json()
        assert [(s["ServiceID"], s["ServiceMeta"]["version"]) for s in catalog] == [("co-1", "v1")]
        # the service definition A took is B's to remove
        assert httpx.put(f"http://{b.consul}/v1/agent/service/deregister/co-1", timeout=5).status_code == 200
        wait_for(lambda: not a.health("shared-consul"), 10, "co-1 gone from A too")
    finally:
        c.close()


def test_nacos_registration_through_one_replica_is_listed_by_the_other_until_deregistered(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    port = free_port()
    c = Client.nacos(a.nacos, "shared-nacos", port, "v1", tmp_path / "na.log")
    try:
        wait_for(lambda: list(b.health("shared-nacos").values()) == ["healthy"], 10, "the instance on B")
        listed = httpx.get(
            f"http://{b.nacos}/nacos/v1/ns/instance/list", params={"serviceName": "shared-nacos"}, timeout=5
        ).json()
        assert [(h["port"], h["healthy"], h["metadata"]["version"]) for h in listed["hosts"]] == [(port, True, "v1")]
    finally:
        c.close()  # deregisters through A
    wait_for(lambda: not b.health("shared-nacos"), 10, "the instance gone from B")


def _grpc(replica: Replica) -> dict[str, Any]:
    doc = replica.pilot.get("/debug/registry")
    return dict(next(r for r in doc["registries"] if r["name"] == "nacos")["grpc"])


def test_nacos_grpc_instance_stays_while_its_client_moves_to_the_live_replica(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    port = free_port()
    # nacos-sdk-python given both replicas: it picks one, and moves to the other when that one is gone
    c = Client.nacos_grpc(f"{a.nacos},{b.nacos}", "shared-grpc", port, "v1", tmp_path / "ng.log")
    try:
        iid = f"127.0.0.1:{port}"
        for r in (a, b):
            wait_for(lambda r=r: r.health("shared-grpc") == {iid: "healthy"}, 10, "the instance on both")
        first, other = (a, b) if _grpc(a)["instances"] == 1 else (b, a)
        assert (_grpc(first)["instances"], _grpc(other)["instances"]) == (1, 0)
        first.pilot.stop()  # its connection ends; what it registered stays in the store, on its lease
        wait_for(lambda: _grpc(other)["connections"] == 1, 20, "the client reconnected to the live replica")
        # the client registers again through the live replica (its redo runs every 30 s); meanwhile
        # the instance never leaves the mesh
        deadline = time.monotonic() + 40
        while _grpc(other)["instances"] != 1:
            assert other.health("shared-grpc") == {iid: "healthy"}, "the instance left while its client moved"
            assert time.monotonic() < deadline, "the client never registered again through the live replica"
            time.sleep(0.5)
        assert other.health("shared-grpc") == {iid: "healthy"}
        c.send(cmd="close")  # the client goes without deregistering: its instance leaves with the connection
        wait_for(lambda: not other.health("shared-grpc"), 10, "gone with its connection")
    finally:
        c.close()
