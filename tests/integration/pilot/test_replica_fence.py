"""Two Pilot replicas over a real etcd and a real ZooKeeper: a proxy that fails over from replica A
right after a write through A gets, in its very first answers from replica B, config that already
holds the write (a registration and a DestinationRule), never the version before it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT
from tests.integration.pilot.conftest import PilotProcess, wait_until
from tests.integration.pilot.test_replicas import _store_config
from tests.integration.registries.servers import etcd, zookeeper

__all__ = ["etcd", "zookeeper"]
SERVICE = "hello"
PORT = 9080
CLUSTER_NAME = f"outbound|80|{SERVICE}"  # the service port; instances listen on PORT
ROUNDS = 8


def _first_answers(port: int, node_id: str) -> tuple[cluster_pb2.Cluster, set[str]]:
    """A proxy connecting: CDS and EDS asked at once; the first answer of each, unpacked."""
    node = base_pb2.Node(id=node_id, cluster="fence-test")
    reqs = [
        discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER),
        discovery_pb2.DiscoveryRequest(node=node, type_url=ENDPOINT, resource_names=[CLUSTER_NAME]),
    ]
    done = threading.Event()

    def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
        yield from reqs
        done.wait(20)

    got: dict[str, discovery_pb2.DiscoveryResponse] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources(requests(), timeout=20)
        try:
            for resp in call:
                got.setdefault(resp.type_url, resp)
                if len(got) == 2:
                    break
        finally:
            done.set()
            call.cancel()
    cluster = cluster_pb2.Cluster()
    for res in got[CLUSTER].resources:
        c = cluster_pb2.Cluster.FromString(res.value)
        if c.name == CLUSTER_NAME:
            cluster = c
    addresses = set()
    for res in got[ENDPOINT].resources:
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(res.value)
        for group in cla.endpoints:
            for ep in group.lb_endpoints:
                addresses.add(ep.endpoint.address.socket_address.address)
    return cluster, addresses


def _max_connections(cluster: cluster_pb2.Cluster) -> int | None:
    for t in cluster.circuit_breakers.thresholds:
        if t.HasField("max_connections"):
            return int(t.max_connections.value)
    return None


def _put_rule(pilot: PilotProcess, max_connections: int) -> None:
    r = httpx.put(
        f"{pilot.api_url}/apis/networking.istio.io/v1/namespaces/default/destinationrules/{SERVICE}",
        json={
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": SERVICE, "namespace": "default"},
            "spec": {
                "host": SERVICE,
                "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": max_connections}}},
            },
        },
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text


def _register(pilot: PilotProcess, n: int) -> str:
    address = f"127.0.1.{n}"
    pilot.register(SERVICE, f"i{n}", address=address, port=PORT, protocol="http")
    return address


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_first_answer_after_failover_holds_the_write_made_through_the_other_replica(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config: dict[str, Any] = _store_config(kind, request)
    a, b = (PilotProcess(tmp_path / f"pilot-{i}", config=config, ready_timeout=90) for i in range(2))
    with ExitStack() as stack:
        for p in (a, b):
            stack.callback(p.stop)
            p.start()
        expected = {_register(a, 0)}
        _put_rule(a, 1)
        wait_until(lambda: _first_answers(b.xds_port, "warm")[1] == expected, 30, what="B follows A")
        fences_before = b.get("/debug/syncz")["fence"]["runs"]
        for n in range(1, ROUNDS + 1):
            held_cluster, held = _first_answers(a.xds_port, f"proxy-{n}")  # the proxy on A
            assert held == expected and _max_connections(held_cluster) == n
            expected.add(_register(a, n))
            _put_rule(a, n + 1)
            # A goes away; the proxy's next server is B, at once
            cluster, addresses = _first_answers(b.xds_port, f"proxy-{n}")
            assert addresses == expected, f"round {n}: B's first EDS answer lacks the write through A"
            assert _max_connections(cluster) == n + 1, f"round {n}: B's first CDS answer is the rule before"
        fence = b.get("/debug/syncz")["fence"]
        assert fence["runs"] > fences_before and fence["failures"] == 0 and fence["used"]
