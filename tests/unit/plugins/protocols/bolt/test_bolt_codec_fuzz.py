"""Property tests: arbitrary bytes and arbitrary chunking never break the Bolt codec's contract."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.errors import RemoteProtocolError
from sofamesh.core.events import NEED_DATA, Event, RequestHead
from sofamesh.plugins.protocols.bolt import BoltCodec
from sofamesh.plugins.protocols.bolt.hessian import read_method_name
from tests.unit.plugins.protocols.bolt.bolt_captured import (
    ANTHUNDER_REQUEST,
    NODE_V1_REQUEST,
    NODE_V2CRC_REQUEST,
    NODE_V2CRC_RESPONSE,
)

FRAMES = [NODE_V1_REQUEST, NODE_V2CRC_REQUEST, ANTHUNDER_REQUEST]


def drain(codec: BoltCodec, limit: int = 1000) -> list[Event]:
    out: list[Event] = []
    for _ in range(limit):
        ev = codec.next_event()
        if ev is NEED_DATA:
            break
        out.append(ev)  # type: ignore[arg-type]
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), role=st.sampled_from([Role.SERVER, Role.CLIENT]))
def test_arbitrary_bytes_give_events_or_a_protocol_error_and_nothing_else(data: bytes, role: Role) -> None:
    codec = BoltCodec(role, CodecLimits(max_frame_bytes=1 << 16))
    codec.receive_data(data)
    codec.receive_data(b"")
    try:
        for ev in drain(codec):
            if isinstance(ev, RequestHead):
                ev.key("method")
    except RemoteProtocolError as exc:
        assert exc.head is None or isinstance(exc.head, RequestHead)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(st.sampled_from(FRAMES), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_any_chunking_of_a_stream_of_frames_gives_the_frames_back_in_order(frames: list[bytes],
                                                                            cuts: list[int]) -> None:
    stream = b"".join(frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    codec = BoltCodec(Role.SERVER, CodecLimits())
    got: list[Event] = []
    for a, b in itertools.pairwise(points):
        codec.receive_data(stream[a:b])
        got += drain(codec)
    assert [e.raw for e in got if isinstance(e, RequestHead)] == frames


@settings(deadline=None)
@given(new_id=st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_any_32_bit_id_rewrite_of_a_crc_frame_parses_back_with_that_id(new_id: int) -> None:
    codec = BoltCodec(Role.CLIENT, CodecLimits())
    out = codec.rewrite_request_id(NODE_V2CRC_RESPONSE, new_id)
    codec.receive_data(out)
    (resp,) = drain(codec)
    assert getattr(resp, "request_id", None) == new_id


@settings(max_examples=500, deadline=None)
@given(tail=st.binary(max_size=300))
def test_the_method_reader_returns_a_string_or_none_for_any_body(tail: bytes) -> None:
    head = b"C\x05x.Req\x92\x01a\x0amethodName\x60"
    for body in (tail, head + tail):
        assert read_method_name(body) is None or isinstance(read_method_name(body), str)
