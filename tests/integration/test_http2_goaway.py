"""A connection-level HTTP/2 protocol error is answered with GOAWAY before the close (RFC 9113
§5.4.1): the peer learns the error code and the last stream id it may retry above. The peer here is
the `h2` library's client state machine reading the proxy's bytes."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from sofamesh.testing import ProxyProcess, free_port

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id) + payload


def _proxy(proxy_factory: Callable[..., ProxyProcess]) -> int:
    port = free_port()
    proxy_factory({
        "listeners": [{"name": "h2", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                       "routes": [{"cluster": "none"}]}],
        "clusters": [{"name": "none", "endpoints": [f"127.0.0.1:{free_port()}"]}],
    })
    return port


def _events_until_close(port: int, after_preface: bytes) -> list[h2.events.Event]:
    """Send a valid client preface + SETTINGS, then ``after_preface``; return what h2 makes of every
    byte the proxy sends until it closes the connection."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    events: list[h2.events.Event] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client.data_to_send() + after_preface)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            try:
                events.extend(client.receive_data(data))
            except h2.exceptions.ProtocolError:
                break  # h2 refuses what follows a GOAWAY we already recorded
    return events


@pytest.mark.parametrize("bad_frame, code", [
    # HEADERS on stream 0: connection error PROTOCOL_ERROR (RFC 9113 §6.2)
    (_frame(0x1, 0x5, 0, b"\x82"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    # WINDOW_UPDATE taking the connection window past 2^31-1: FLOW_CONTROL_ERROR (§6.9.1)
    (_frame(0x8, 0, 0, struct.pack(">I", 0x7FFFFFFF)), h2.errors.ErrorCodes.FLOW_CONTROL_ERROR),
])
def test_a_connection_error_is_answered_with_goaway_naming_the_error_before_the_close(
    proxy_factory: Callable[..., ProxyProcess], bad_frame: bytes, code: h2.errors.ErrorCodes,
) -> None:
    port = _proxy(proxy_factory)
    events = _events_until_close(port, bad_frame)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways, f"no GOAWAY before the close; events: {events}"
    assert goaways[0].error_code == code
    assert goaways[0].last_stream_id == 0
