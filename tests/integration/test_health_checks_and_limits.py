"""Active health checks of the kinds the resilience tests do not cover (TCP connect, gRPC health v1
against a grpcio server) and the pool's connection limits, through a real sidecar."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port

SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"


def _flags(proxy: ProxyProcess, cluster: str) -> dict[str, str]:
    return {e["address"]: e["health_flags"] for e in json.loads(proxy.get("/clusters"))[cluster]["endpoints"]}


def _settled(proxy: ProxyProcess, cluster: str, expect: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while (flags := _flags(proxy, cluster)) != expect and time.monotonic() < deadline:
        time.sleep(0.05)
    return flags


def _checked(cluster: dict[str, Any]) -> ProxyProcess:
    return ProxyProcess({"listeners": [{"name": "web", "address": f"127.0.0.1:{free_port()}", "protocols": ["http1"],
                                        "routes": [{"name": "all", "cluster": cluster["name"]}]}],
                         "clusters": [cluster]})


HC = {"timeout_ms": 300, "interval_ms": 200, "no_traffic_interval_ms": 200, "unhealthy_threshold": 1}


def test_a_tcp_health_check_fails_a_port_nobody_listens_on_and_matches_expected_bytes() -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    try:
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        dead = f"127.0.0.1:{free_port()}"
        with _checked({"name": "tcp", "endpoints": [alive, dead],
                       "health_checks": [{**HC, "tcp_health_check": {}}]}) as proxy:
            flags = _settled(proxy, "tcp", {alive: "healthy", dead: "/failed_active_hc"})
    finally:
        listening.close()
    assert flags == {alive: "healthy", dead: "/failed_active_hc"}


@contextmanager
def _grpc_health(status: bytes) -> Iterator[str]:
    """A grpcio server whose grpc.health.v1.Health/Check answers ``status`` (raw protobuf bytes)."""
    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(lambda req, ctx: status)})
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait(5)


def test_a_grpc_health_check_follows_the_servers_serving_status() -> None:
    with _grpc_health(SERVING) as serving, _grpc_health(NOT_SERVING) as not_serving:
        with _checked({"name": "g", "protocol": "http2", "endpoints": [serving, not_serving],
                       "health_checks": [{**HC, "grpc_health_check": {"service_name": "echo"}}]}) as proxy:
            flags = _settled(proxy, "g", {serving: "healthy", not_serving: "/failed_active_hc"})
            stats = proxy.stats()["clusters"]["g"]
    assert flags == {serving: "healthy", not_serving: "/failed_active_hc"}
    assert stats["health_check_success"] >= 1 and stats["health_check_failure"] >= 1


def test_max_requests_per_connection_opens_a_new_upstream_connection_every_n_requests() -> None:
    with UpstreamServer() as up:
        port = free_port()
        with ProxyProcess({
                "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                               "routes": [{"name": "all", "cluster": "up"}]}],
                "clusters": [{"name": "up", "endpoints": [up.address], "max_requests_per_connection": 3}]}) as proxy:
            for _ in range(9):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=5) as r:
                    assert r.status == 200
            stats = proxy.stats()["clusters"]["up"]
    # No upstream connection carried more than 3 requests, and the limit retired connections. (A
    # connection may also close early, e.g. when a response and the next request cross on a loaded
    # machine, even one that had just carried its third: then there are more connections and fewer
    # retirements counted by the limit, never a fourth request on one.)
    counts = sorted(up.per_peer.values(), reverse=True)
    assert sum(counts) == 9 and max(counts) == 3, counts
    assert 1 <= stats["upstream_cx_max_requests"] <= counts.count(3), (counts, stats)
    assert stats["upstream_cx_total"] == len(counts)
