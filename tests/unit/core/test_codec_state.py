"""Codec state at a message boundary (``Codec.export_state``): what a hot upgrade carries to the new
process. A fresh codec that imports it and is fed the unread bytes decodes what the old one would
have decoded."""

from __future__ import annotations

import pytest

from sofamesh.core.codec import CodecLimits, CodecState, Role
from sofamesh.core.events import NEED_DATA, EndOfMessage, Event, RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.bolt import BoltCodec
from sofamesh.plugins.protocols.bolt.codec import BoltCodecFactory
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from sofamesh.plugins.protocols.http1.codec import Http1Codec
from sofamesh.plugins.protocols.http2.codec import Http2Codec
from tests.unit.plugins.protocols.bolt.bolt_captured import NODE_V2CRC_REQUEST
from tests.unit.plugins.protocols.dubbo.test_dubbo_codec import request_frame

LIMITS = CodecLimits()


def drain(codec: object) -> list[Event]:
    out: list[Event] = []
    while (ev := codec.next_event()) is not NEED_DATA:  # type: ignore[attr-defined]
        out.append(ev)
    return out


def moved(codec: object, factory_new: object) -> object:
    """A fresh codec carrying on from ``codec``'s exported state, as the new process builds it."""
    st = codec.export_state()  # type: ignore[attr-defined]
    assert isinstance(st, CodecState)
    fresh = factory_new()  # type: ignore[operator]
    fresh.import_state(st.state)
    if st.unread:
        fresh.receive_data(st.unread)
    return fresh


def test_bolt_moves_between_frames_with_the_half_received_next_frame_and_its_framing() -> None:
    old = BoltCodec(Role.SERVER, LIMITS)
    frame = NODE_V2CRC_REQUEST
    old.receive_data(frame + frame[:10])
    [head] = drain(old)
    assert isinstance(head, RequestHead)
    new = moved(old, lambda: BoltCodec(Role.SERVER, LIMITS))
    new.receive_data(frame[10:])  # type: ignore[attr-defined]
    [again] = drain(new)
    assert isinstance(again, RequestHead) and again.raw == frame
    # heartbeats the new codec sends are framed as the client's last frame (v2 with CRC), as before
    assert new.heartbeat(5) == old.heartbeat(5)  # type: ignore[attr-defined]
    assert BoltCodecFactory().new_codec(Role.SERVER, LIMITS).heartbeat(5) != old.heartbeat(5)


def test_bolt_refuses_a_state_that_is_not_a_framing() -> None:
    with pytest.raises(ValueError, match="5 bytes"):
        BoltCodec(Role.SERVER, LIMITS).import_state(b"\x01")


def test_dubbo_moves_with_the_unread_start_of_the_next_frame() -> None:
    old = DubboCodec(Role.SERVER, LIMITS)
    a, b = request_frame(request_id=1), request_frame(request_id=2)
    old.receive_data(a + b[:7])
    [head] = drain(old)
    assert isinstance(head, RequestHead) and head.request_id == 1
    new = moved(old, lambda: DubboCodec(Role.SERVER, LIMITS))
    new.receive_data(b[7:])  # type: ignore[attr-defined]
    [nxt] = drain(new)
    assert isinstance(nxt, RequestHead) and nxt.request_id == 2 and nxt.raw == b


def test_http1_moves_only_between_exchanges() -> None:
    codec = Http1Codec(Role.SERVER, LIMITS)
    assert codec.export_state() == CodecState()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    drain(codec)
    assert codec.export_state() is None  # the request is not answered yet
    codec.send(ResponseHead(protocol="http1", status=200, http_status=200, headers=Headers([("content-length", "0")]),
                            end_stream=True))
    codec.send(EndOfMessage())
    assert codec.export_state() == CodecState()
    codec.receive_data(b"GET /next HT")
    assert codec.export_state() is None  # half a request sits in the parser


def test_http1_with_connection_close_does_not_move() -> None:
    codec = Http1Codec(Role.SERVER, LIMITS)
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    drain(codec)
    codec.send(ResponseHead(protocol="http1", status=200, http_status=200, headers=Headers([("content-length", "0")]),
                            end_stream=True))
    codec.send(EndOfMessage())
    assert codec.export_state() is None


def test_http2_keeps_the_default_and_cannot_move() -> None:
    assert Http2Codec(Role.SERVER, LIMITS).export_state() is None
