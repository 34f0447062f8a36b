"""A route's ``per_try_timeout_ms`` covers the whole try, as Envoy's ``per_try_timeout``: an endpoint
that never answers is left for a retry on another one, and one that sends its response head and
then stalls has the response cut at the per-try timeout, not at the route's much longer timeout."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, free_port

PER_TRY_MS = 300
ROUTE_TIMEOUT_MS = 6000
HOLD_S = 5.0  # how long a stalling backend keeps a connection open (bounded)


class RawBackend:
    """127.0.0.1 HTTP/1.1 backend on a raw socket: ``mode`` "ok" answers at once, "hang" never
    answers, "stall" sends the head and part of the body and then nothing more."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self.stopping = False
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> RawBackend:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping = True
        for t in self.threads:
            t.join(HOLD_S + 2)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        deadline = time.monotonic() + HOLD_S
        data = b""
        try:
            while time.monotonic() < deadline and not self.stopping:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                data += chunk
                while b"\r\n\r\n" in data:
                    _, data = data.split(b"\r\n\r\n", 1)
                    self.requests += 1
                    if self.mode == "ok":
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    elif self.mode == "stall":
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        finally:
            conn.close()


def _proxy(port: int, endpoints: list[str]) -> ProxyProcess:
    return ProxyProcess({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"], "routes": [{
            "name": "all", "cluster": "web", "timeout_ms": ROUTE_TIMEOUT_MS,
            "retry_policy": {"retry_on": ["5xx", "reset"], "num_retries": 2, "per_try_timeout_ms": PER_TRY_MS}}]}],
        "clusters": [{"name": "web", "endpoints": endpoints}]})


def test_a_try_that_never_answers_is_retried_on_another_endpoint_after_the_per_try_timeout() -> None:
    with RawBackend("hang") as hung, RawBackend("ok") as good:
        port = free_port()
        with _proxy(port, [hung.address, good.address]) as proxy:
            for _ in range(4):  # round robin: at least one first try lands on the hung endpoint
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                started = time.monotonic()
                conn.request("GET", "/")
                r = conn.getresponse()
                assert (r.status, r.read()) == (200, b"ok")
                assert time.monotonic() - started < ROUTE_TIMEOUT_MS / 2000
                conn.close()
            stats = proxy.stats()["clusters"]["web"]
    assert hung.requests >= 1 and good.requests == 4
    assert stats["upstream_rq_per_try_timeout"] == hung.requests and stats["upstream_rq_retry"] >= hung.requests


def test_a_response_that_stalls_after_its_head_is_cut_at_the_per_try_timeout() -> None:
    with RawBackend("stall") as stalling:
        port = free_port()
        with _proxy(port, [stalling.address]) as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            started = time.monotonic()
            conn.request("GET", "/")
            r = conn.getresponse()
            assert r.status == 200  # the head went out before the try timed out
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                r.read()
            elapsed = time.monotonic() - started
            conn.close()
            stats = proxy.stats()["clusters"]["web"]
    assert PER_TRY_MS / 1000 * 0.9 < elapsed < ROUTE_TIMEOUT_MS / 2000, elapsed
    assert stats["upstream_rq_per_try_timeout"] == 1 and stats["upstream_rq_retry"] == 0
