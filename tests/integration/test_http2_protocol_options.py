"""``http2_protocol_options`` (Envoy's fields) on a listener and on a cluster, seen on the wire: the
SETTINGS and connection WINDOW_UPDATE the sidecar sends, and a flood limit lowered below its
default ending the connection with GOAWAY(ENHANCE_YOUR_CALM) where the default keeps it open."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

from sofamesh.testing import ProxyProcess, free_port
from tests.integration.test_http2_peer_goaway import PREFACE, _frame, _frames

ENHANCE_YOUR_CALM = 0xB
HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE = 0x1, 0x3, 0x4


def _settings(payload: bytes) -> dict[int, int]:
    return {k: v for k, v in (struct.unpack(">HI", payload[i : i + 6]) for i in range(0, len(payload), 6))}


def _first_frames(sock: socket.socket) -> list[tuple[int, int, int, bytes]]:
    """The frames a connection sends before it is asked anything: SETTINGS, then the connection's
    WINDOW_UPDATE."""
    seen: list[tuple[int, int, int, bytes]] = []
    for f in _frames(sock, time.monotonic() + 5):
        seen.append(f)
        if f[0] == 0x8 or f[0] == -1:
            break
    return seen


def test_a_listeners_options_are_its_settings_and_its_flood_limits(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    tuned, plain = free_port(), free_port()
    route = {"cluster": "none"}
    proxy_factory({
        "listeners": [
            {"name": "tuned", "address": f"127.0.0.1:{tuned}", "protocols": ["http2"], "routes": [route],
             "http2_protocol_options": {"max_concurrent_streams": 7, "initial_stream_window_size": 100_000,
                                        "initial_connection_window_size": 1_048_576,
                                        "max_inbound_priority_frames_per_stream": 1, "hpack_table_size": 0}},
            {"name": "plain", "address": f"127.0.0.1:{plain}", "protocols": ["http2"], "routes": [route]},
        ],
        "clusters": [{"name": "none", "endpoints": [f"127.0.0.1:{free_port()}"]}],
    })  # fmt: skip
    priority = _frame(0x2, 0, 1, struct.pack(">IB", 0, 15))  # stream 1 depends on 0, weight 16
    outcome: dict[str, tuple[dict[int, int], int, list[tuple[int, int]]]] = {}
    for name, port in (("tuned", tuned), ("plain", plain)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(PREFACE + _frame(0x4, 0, 0, b"") + _frame(0x4, 0x1, 0, b""))
            first = _first_frames(s)
            settings = next(_settings(p) for t, flags, _, p in first if t == 0x4 and not flags & 1)
            window = next(struct.unpack(">I", p)[0] for t, _, sid, p in first if t == 0x8 and sid == 0)
            s.sendall(priority * 2)  # twice: over a limit of 1 x (1 + no header block), well under 100
            s.sendall(_frame(0x6, 0, 0, b"pingpong"))
            goaways = [struct.unpack(">II", p[:8]) for t, _, _, p in _frames(s, time.monotonic() + 3) if t == 0x7]
            outcome[name] = (settings, window, goaways)
    settings, window, goaways = outcome["tuned"]
    assert (settings[MAX_CONCURRENT_STREAMS], settings[INITIAL_WINDOW_SIZE]) == (7, 100_000)
    assert settings[HEADER_TABLE_SIZE] == 0
    assert window == 1_048_576 - 65_535
    assert goaways == [(0, ENHANCE_YOUR_CALM)]
    settings, window, goaways = outcome["plain"]
    assert (settings[MAX_CONCURRENT_STREAMS], settings[INITIAL_WINDOW_SIZE]) == (1024, 256 * 1024)
    assert HEADER_TABLE_SIZE not in settings  # the RFC's 4096 goes without saying
    assert window == 16 * 1024 * 1024 - 65_535
    assert goaways == []


def test_a_clusters_options_are_the_settings_its_upstream_connections_send(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    import httpx

    upstream = socket.create_server(("127.0.0.1", 0))
    first: list[tuple[int, int, int, bytes]] = []

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            preface = b""
            while len(preface) < len(PREFACE):
                preface += conn.recv(len(PREFACE) - len(preface))
            assert preface == PREFACE
            first.extend(_first_frames(conn))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = free_port()
    proxy_factory({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                       "routes": [{"cluster": "h2up", "timeout_ms": 3000}]}],
        "clusters": [{"name": "h2up", "protocol": "http2", "endpoints": [f"127.0.0.1:{upstream.getsockname()[1]}"],
                      "http2_protocol_options": {"max_concurrent_streams": 3, "initial_stream_window_size": 70_000,
                                                 "initial_connection_window_size": 131_070,
                                                 "hpack_table_size": 65_536}}],
    })  # fmt: skip
    try:
        httpx.get(f"http://127.0.0.1:{port}/x", timeout=20)  # its answer does not matter: the upstream hangs up
        t.join(10)
    finally:
        upstream.close()
    settings = next(_settings(p) for ftype, flags, _, p in first if ftype == 0x4 and not flags & 1)
    assert (settings[MAX_CONCURRENT_STREAMS], settings[INITIAL_WINDOW_SIZE]) == (3, 70_000)
    assert settings[HEADER_TABLE_SIZE] == 65_536
    assert [struct.unpack(">I", p)[0] for ftype, _, sid, p in first if ftype == 0x8 and sid == 0] == [65_535]
