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
