"""Bolt edge cases through a running sofamesh on 127.0.0.1, spoken with raw sockets.

Frames are built with the bolt plugin's own frame functions and answers are decoded with its codec
(client role, which verifies CRC32), so these tests check what sofamesh puts on the wire: local
heartbeat answers, local replies in the request's framing, and closing a connection that broke
the protocol.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA, ConnectionClosed, Event, Heartbeat, ResponseHead
from sofamesh.plugins.protocols.bolt import BoltCodec, Framing
from sofamesh.plugins.protocols.bolt.frames import (
    CMD_HEARTBEAT,
    TYPE_ONEWAY,
    encode_header_map,
    encode_request,
)
from sofamesh.testing import ProxyProcess, free_port

V2CRC = Framing(proto=2, ver1=2, switch=1)
SERVICE = encode_header_map([("service", "com.example.EchoService:1.0")])


@contextmanager
def sofamesh_with_dead_upstream(max_frame_bytes: int = 16 * 1024 * 1024) -> Iterator[tuple[str, int]]:
    """A bolt listener routing com.example.EchoService:1.0 to an endpoint where nothing listens."""
    port, dead = free_port(), free_port()
    config = {
        "listeners": [{"name": "rpc_in", "address": f"127.0.0.1:{port}", "protocols": ["bolt"],
                       "limits": {"max_frame_bytes": max_frame_bytes},
                       "routes": [{"match": {"service": {"prefix": "com.example.EchoService"}},
                                   "cluster": "dead", "timeout_ms": 2000}]}],
        "clusters": [{"name": "dead", "protocol": "bolt", "connect_timeout_ms": 300,
                      "endpoints": [f"127.0.0.1:{dead}"]}],
    }
    with ProxyProcess(config):
        yield "127.0.0.1", port


def exchange(address: tuple[str, int], payload: bytes, want: int, timeout: float = 5.0) -> list[Event]:
    """Send ``payload``; read until ``want`` events or the peer closes (then ConnectionClosed is last)."""
    codec = BoltCodec(Role.CLIENT, CodecLimits())
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(payload)
        while len(events) < want and time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            codec.receive_data(data)
            while (ev := codec.next_event()) is not NEED_DATA:
                events.append(ev)  # type: ignore[arg-type]
            if not data:
                break
    return events


@pytest.mark.parametrize("framing", [Framing(), V2CRC], ids=["v1", "v2crc"])
def test_a_client_heartbeat_is_answered_by_sofamesh_itself_in_its_framing(framing: Framing) -> None:
    with sofamesh_with_dead_upstream() as address:
        events = exchange(address, encode_request(31, framing, cmdcode=CMD_HEARTBEAT, timeout_ms=3000), 1)
    assert len(events) == 1 and isinstance(events[0], Heartbeat)
    assert (events[0].request_id, events[0].reply, events[0].meta) == (31, True, framing)


@pytest.mark.parametrize("framing", [Framing(), V2CRC], ids=["v1", "v2crc"])
def test_unrouted_and_unreachable_requests_get_status_6_in_their_own_framing_on_one_connection(
        framing: Framing) -> None:
    other = encode_header_map([("service", "com.example.Nobody:1.0")])
    payload = encode_request(1, framing, header=other) + encode_request(2, framing, header=SERVICE)
    with sofamesh_with_dead_upstream() as address:
        events = exchange(address, payload, 2)
    assert sorted((e.request_id, e.status, e.meta) for e in events if isinstance(e, ResponseHead)) == [
        (1, 6, framing), (2, 6, framing)]


def test_an_oversized_frame_gets_status_9_with_its_id_and_the_connection_closes() -> None:
    big = encode_request(77, header=SERVICE, content=b"x" * 4096)
    with sofamesh_with_dead_upstream(max_frame_bytes=1024) as address:
        events = exchange(address, big, 2)
    assert isinstance(events[0], ResponseHead) and (events[0].request_id, events[0].status) == (77, 9)
    assert events[1:] == [ConnectionClosed(clean=True)]


def test_a_frame_with_a_bad_crc_gets_status_9_and_the_connection_closes() -> None:
    frame = encode_request(5, V2CRC, header=SERVICE)
    bad = frame[:-1] + bytes([frame[-1] ^ 0xFF])
    with sofamesh_with_dead_upstream() as address:
        events = exchange(address, bad, 2)
    assert isinstance(events[0], ResponseHead) and (events[0].request_id, events[0].status) == (5, 9)
    assert events[0].meta == V2CRC
    assert events[1:] == [ConnectionClosed(clean=True)]


def test_a_oneway_request_gets_no_answer_even_when_it_cannot_be_delivered() -> None:
    oneway = encode_request(8, type_=TYPE_ONEWAY, header=SERVICE)
    beat = encode_request(9, cmdcode=CMD_HEARTBEAT)
    with sofamesh_with_dead_upstream() as address:
        events = exchange(address, oneway + beat, 2, timeout=4.0)
    assert [(type(e), getattr(e, "request_id", None)) for e in events] == [(Heartbeat, 9)]
