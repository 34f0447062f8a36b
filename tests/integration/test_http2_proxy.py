"""The http2 codec inside a running sofamesh proxy: real gRPC and h2c clients, local replies.

These cover what the kernel does with an HTTP/2 request before any upstream stream exists
(sniffing, routing on gRPC service/method, local replies in gRPC form). Forwarding to HTTP/2
upstreams is exercised against real peers in tests/conformance/test_http2_peers.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, free_port

GRPC_CLIENT = Path(__file__).resolve().parents[1] / "conformance" / "peers" / "grpc" / "echo_client.py"
ECHO = "sofamesh.test.Echo"


def grpc_calls(port: int, *calls: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{port}", *calls],
                         capture_output=True, timeout=60, check=True)
    return dict(json.loads(out.stdout.decode().strip().splitlines()[-1]))


def curl(*args: str) -> str:
    if shutil.which("curl") is None:
        message = "curl is not installed: run scripts/setup.d/00-base.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run(["curl", "-sS", "-i", "--max-time", "20", *args], capture_output=True, timeout=30)
    return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")


def grpc_proxy(proxy_factory: Callable[..., ProxyProcess], protocols: list[str] | str,
               routes: list[dict[str, Any]], endpoints: list[str]) -> tuple[ProxyProcess, int]:
    port = free_port()
    cfg = {
        "listeners": [{"name": "grpc_in", "address": f"127.0.0.1:{port}", "protocols": protocols, "routes": routes}],
        "clusters": [{"name": "echo", "endpoints": endpoints, "connect_timeout_ms": 500}],
    }
    return proxy_factory(cfg), port


def test_grpc_call_without_a_route_gets_unimplemented_from_the_proxy(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    routes = [{"match": {"service": "other.v1.Service"}, "cluster": "echo"}]
    proxy, port = grpc_proxy(proxy_factory, ["http2"], routes, [f"127.0.0.1:{free_port()}"])
    results = grpc_calls(port, "unary", "client_stream")
    for call in ("unary", "client_stream"):
        assert results[call]["code"] == "UNIMPLEMENTED", results
        assert results[call]["details"]
    stats = proxy.stats()
    assert stats["listeners"]["grpc_in"]["downstream_rq_no_route"] == 2
    assert stats["listeners"]["grpc_in"]["downstream_cx_protocol_error"] == 0


def test_grpc_call_routed_on_service_and_method_to_a_down_upstream_gets_unavailable(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    routes = [{"match": {"service": ECHO, "method": "Unary"}, "cluster": "echo", "timeout_ms": 5000}]
    proxy, port = grpc_proxy(proxy_factory, ["http2"], routes, [f"127.0.0.1:{free_port()}"])
    results = grpc_calls(port, "unary", "server_stream")
    assert results["unary"]["code"] == "UNAVAILABLE", results
    assert results["server_stream"]["code"] == "UNIMPLEMENTED", results  # method ServerStream has no route
    rpc = proxy.stats()["rpc"]
    assert any(key.endswith(f"|http2|{ECHO}|Unary") for key in rpc), rpc


@pytest.mark.parametrize("protocols", [["http1", "http2"], "auto"])
def test_h2c_and_http1_share_a_listener_and_get_local_replies_in_their_own_protocol(
    proxy_factory: Callable[..., ProxyProcess], protocols: list[str] | str
) -> None:
    routes = [{"match": {"path": {"prefix": "/only-this"}}, "cluster": "echo"}]
    proxy, port = grpc_proxy(proxy_factory, protocols, routes, [f"127.0.0.1:{free_port()}"])
    h2 = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/elsewhere")
    assert h2.startswith("HTTP/2 404"), h2
    assert "x-sofamesh-local-reply: no_route" in h2
    h1 = curl("--http1.1", f"http://127.0.0.1:{port}/elsewhere")
    assert h1.startswith("HTTP/1.1 404"), h1
    grpc = grpc_calls(port, "unary")
    assert grpc["unary"]["code"] == "UNIMPLEMENTED", grpc
    assert proxy.stats()["listeners"]["grpc_in"]["downstream_cx_sniff_fail"] == 0


def test_tls_listener_offering_alpn_h2_serves_http2_and_http1(
    proxy_factory: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        message = "openssl is not installed: run scripts/setup.d/22-http2-peers.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    port = free_port()
    cfg = {
        "listeners": [{
            "name": "tls_in", "address": f"127.0.0.1:{port}", "protocols": ["http1", "http2"],
            "tls": {"cert": str(cert), "key": str(key), "alpn": ["h2", "http/1.1"]},
            "routes": [{"match": {"path": {"prefix": "/only-this"}}, "cluster": "echo"}],
        }],
        "clusters": [{"name": "echo", "endpoints": [f"127.0.0.1:{free_port()}"]}],
    }
    proxy = proxy_factory(cfg)
    h2 = curl("-k", "-v", "--http2", f"https://127.0.0.1:{port}/elsewhere")
    assert "ALPN: server accepted h2" in h2 or "ALPN, server accepted to use h2" in h2, h2
    assert "HTTP/2 404" in h2 and "x-sofamesh-local-reply: no_route" in h2, h2
    h1 = curl("-k", "--http1.1", f"https://127.0.0.1:{port}/elsewhere")
    assert h1.startswith("HTTP/1.1 404"), h1
    assert proxy.stats()["listeners"]["tls_in"]["downstream_rq_no_route"] == 2
