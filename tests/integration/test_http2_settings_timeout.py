"""A client that never acknowledges the sidecar's SETTINGS is sent GOAWAY(SETTINGS_TIMEOUT) and
closed (RFC 9113 6.5.3; 10 s, nghttpx's default); one that acknowledges them is kept."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

from sofamesh.testing import ProxyProcess, free_port
from tests.integration.test_http2_peer_goaway import PREFACE, _frame, _frames

SETTINGS_TIMEOUT = 0x4


def _listener(proxy_factory: Callable[..., ProxyProcess]) -> tuple[ProxyProcess, int]:
    port = free_port()
    proxy = proxy_factory({
        "listeners": [{"name": "h2", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                       "routes": [{"cluster": "none"}]}],
        "clusters": [{"name": "none", "endpoints": [f"127.0.0.1:{free_port()}"]}],
    })  # fmt: skip
    return proxy, port


def test_a_client_that_never_acknowledges_settings_gets_goaway_settings_timeout(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy, port = _listener(proxy_factory)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as quiet, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as polite:  # fmt: skip
        start = time.monotonic()
        quiet.sendall(PREFACE + _frame(0x4, 0, 0, b""))  # its SETTINGS, never an ACK of ours
        polite.sendall(PREFACE + _frame(0x4, 0, 0, b"") + _frame(0x4, 0x1, 0, b""))
        seen = list(_frames(quiet, start + 20))
        took = time.monotonic() - start
        goaways = [struct.unpack(">II", p[:8]) for t, _, _, p in seen if t == 0x7]
        assert goaways == [(0, SETTINGS_TIMEOUT)], seen
        assert seen[-1][0] == -1, "the connection was not closed"
        assert 9.5 <= took <= 18, took  # due at 10 s, swept once a second (a loaded machine may lag)
        polite.sendall(_frame(0x6, 0, 0, b"stillok?"))
        acks = [p for t, flags, _, p in _frames(polite, time.monotonic() + 3) if t == 0x6 and flags & 1]
        assert acks == [b"stillok?"]
    assert proxy.stats()["listeners"]["h2"]["downstream_cx_protocol_error"] == 1


def test_an_upstream_that_never_acknowledges_settings_gets_goaway_settings_timeout(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    """The upstream side: the pool's sweep ends the connection; the request on it gets the
    upstream-reset answer instead of waiting for its route timeout."""
    import threading

    import httpx

    upstream = socket.create_server(("127.0.0.1", 0))
    seen: list[tuple[int, int, int, bytes]] = []

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.sendall(_frame(0x4, 0, 0, b""))  # its SETTINGS; never an ACK of ours, never an answer
            preface = b""
            while len(preface) < len(PREFACE):
                preface += conn.recv(len(PREFACE) - len(preface))
            assert preface == PREFACE
            seen.extend(_frames(conn, time.monotonic() + 30))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = free_port()
    proxy = proxy_factory({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                       "routes": [{"cluster": "h2up", "timeout_ms": 60000}]}],
        "clusters": [{"name": "h2up", "protocol": "http2", "endpoints": [f"127.0.0.1:{upstream.getsockname()[1]}"]}],
    })  # fmt: skip
    try:
        start = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{port}/x", timeout=40)
        took = time.monotonic() - start
        t.join(10)
    finally:
        upstream.close()
    assert r.status_code == 503, r.text  # reset before headers, as Envoy
    assert 9.5 <= took <= 20, took
    goaways = [struct.unpack(">II", p[:8]) for ty, _, _, p in seen if ty == 0x7]
    assert [code for _, code in goaways] == [SETTINGS_TIMEOUT], seen
    assert seen[-1][0] == -1  # then closed
    assert proxy.stats()["clusters"]["h2up"]["upstream_cx_protocol_error"] == 1
