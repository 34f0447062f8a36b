"""Malformed and abusive frames against the project's own HTTP/2 connection (``machine``), each
answered with the error code RFC 9113 gives it: GOAWAY for a connection error, RST_STREAM for a
stream error, and the connection serving on after a stream error. Floods (CONTINUATION, rapid
reset, SETTINGS, PING, empty DATA) end in GOAWAY(ENHANCE_YOUR_CALM)."""

from __future__ import annotations

import struct

import hpack
import pytest

from sofamesh.plugins.protocols.http2 import frames as f
from sofamesh.plugins.protocols.http2.machine import (
    ConnectionFailed,
    DataReceived,
    Event,
    HeadersReceived,
    Machine,
    StreamReset,
)

REQ = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a.B/C"), (b":authority", b"svc")]


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return f.frame_header(len(payload), ftype, flags, sid) + payload


def parse(out: bytes) -> list[tuple[int, int, int, bytes]]:
    frames_out = []
    i = 0
    while i < len(out):
        length = int.from_bytes(out[i : i + 3], "big")
        ftype, flags = out[i + 3], out[i + 4]
        sid = int.from_bytes(out[i + 5 : i + 9], "big") & 0x7FFFFFFF
        frames_out.append((ftype, flags, sid, out[i + 9 : i + 9 + length]))
        i += 9 + length
    return frames_out


class Peer:
    """A server-role machine past the preface and SETTINGS, fed by hand-made frames."""

    def __init__(self, **limits: int) -> None:
        self.m = Machine(client=False, **limits)
        self.enc = hpack.Encoder()
        self.m.receive_data(f.PREFACE + f.settings_frame([]))
        self.m.data_to_send()

    def block(self, fields: list[tuple[bytes, bytes]] = REQ) -> bytes:
        return self.enc.encode(fields)

    def headers(self, sid: int, end_stream: bool = False, fields: list[tuple[bytes, bytes]] = REQ) -> bytes:
        return frame(f.HEADERS, f.END_HEADERS | (f.END_STREAM if end_stream else 0), sid, self.block(fields))

    def feed(self, data: bytes) -> list[Event]:
        return self.m.receive_data(data)

    def goaway(self) -> tuple[int, int]:
        """(error code, last stream id) of the GOAWAY just written; fails if there is none."""
        gone = [p for t, _, _, p in parse(self.m.data_to_send()) if t == f.GOAWAY]
        assert gone, "no GOAWAY written"
        last, code = struct.unpack(">LL", gone[0][:8])
        return code, last

    def resets(self) -> list[tuple[int, int]]:
        return [(sid, int.from_bytes(p, "big")) for t, _, sid, p in parse(self.m.data_to_send()) if t == f.RST_STREAM]


def failed_with(events: list[Event], peer: Peer, code: int) -> None:
    assert isinstance(events[-1], ConnectionFailed), events
    assert events[-1].error_code == code, events[-1].message
    assert peer.goaway()[0] == code
    assert peer.m.failed and peer.feed(frame(f.PING, 0, 0, b"12345678")) == []


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


CONNECTION_ERRORS = [
    ("DATA on stream 0", lambda p: frame(f.DATA, 0, 0, b"x"), f.PROTOCOL_ERROR),
    ("HEADERS on stream 0", lambda p: frame(f.HEADERS, f.END_HEADERS, 0, p.block()), f.PROTOCOL_ERROR),
    ("SETTINGS on a stream", lambda p: frame(f.SETTINGS, 0, 1), f.PROTOCOL_ERROR),
    ("SETTINGS of 5 bytes", lambda p: frame(f.SETTINGS, 0, 0, b"\x00" * 5), f.FRAME_SIZE_ERROR),
    ("SETTINGS ACK with payload", lambda p: frame(f.SETTINGS, f.ACK, 0, b"\x00" * 6), f.FRAME_SIZE_ERROR),
    ("ENABLE_PUSH of 2", lambda p: f.settings_frame([(f.ENABLE_PUSH, 2)]), f.PROTOCOL_ERROR),
    (
        "INITIAL_WINDOW_SIZE over 2^31-1",
        lambda p: f.settings_frame([(f.INITIAL_WINDOW_SIZE, 2**31)]),
        f.FLOW_CONTROL_ERROR,
    ),
    ("MAX_FRAME_SIZE below 16384", lambda p: f.settings_frame([(f.MAX_FRAME_SIZE, 16_383)]), f.PROTOCOL_ERROR),
    ("MAX_FRAME_SIZE over 2^24-1", lambda p: f.settings_frame([(f.MAX_FRAME_SIZE, 2**24)]), f.PROTOCOL_ERROR),
    ("PING of 7 bytes", lambda p: frame(f.PING, 0, 0, b"1234567"), f.FRAME_SIZE_ERROR),
    ("PING on a stream", lambda p: frame(f.PING, 0, 1, b"12345678"), f.PROTOCOL_ERROR),
    ("GOAWAY on a stream", lambda p: frame(f.GOAWAY, 0, 1, u32(0) + u32(0)), f.PROTOCOL_ERROR),
    ("GOAWAY of 7 bytes", lambda p: frame(f.GOAWAY, 0, 0, b"\x00" * 7), f.FRAME_SIZE_ERROR),
    ("WINDOW_UPDATE of 3 bytes", lambda p: frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), f.FRAME_SIZE_ERROR),
    ("WINDOW_UPDATE of 0 on the connection", lambda p: frame(f.WINDOW_UPDATE, 0, 0, u32(0)), f.PROTOCOL_ERROR),
    (
        "WINDOW_UPDATE overflowing the connection window",
        lambda p: frame(f.WINDOW_UPDATE, 0, 0, u32(2**31 - 1)),
        f.FLOW_CONTROL_ERROR,
    ),
    ("WINDOW_UPDATE on an idle stream", lambda p: frame(f.WINDOW_UPDATE, 0, 9, u32(1)), f.PROTOCOL_ERROR),
    ("RST_STREAM on stream 0", lambda p: frame(f.RST_STREAM, 0, 0, u32(8)), f.PROTOCOL_ERROR),
    ("RST_STREAM on an idle stream", lambda p: frame(f.RST_STREAM, 0, 7, u32(8)), f.PROTOCOL_ERROR),
    ("RST_STREAM of 3 bytes", lambda p: p.headers(1) + frame(f.RST_STREAM, 0, 1, b"\x00\x00\x08"), f.FRAME_SIZE_ERROR),
    ("PRIORITY on stream 0", lambda p: frame(f.PRIORITY, 0, 0, u32(1) + b"\x10"), f.PROTOCOL_ERROR),
    ("frame over SETTINGS_MAX_FRAME_SIZE", lambda p: frame(f.DATA, 0, 1, b"x" * 16_385), f.FRAME_SIZE_ERROR),
    ("DATA on an idle stream", lambda p: frame(f.DATA, 0, 1, b"x"), f.PROTOCOL_ERROR),
    (
        "DATA padding as long as the payload",
        lambda p: p.headers(1) + frame(f.DATA, f.PADDED, 1, b"\x04abc"),
        f.PROTOCOL_ERROR,
    ),
    ("padded DATA without a pad length", lambda p: p.headers(1) + frame(f.DATA, f.PADDED, 1), f.FRAME_SIZE_ERROR),
    (
        "HEADERS padding past the payload",
        lambda p: frame(f.HEADERS, f.PADDED | f.END_HEADERS, 1, b"\x10" + p.block()[:4]),
        f.PROTOCOL_ERROR,
    ),
    ("HEADERS on a closed stream", None, f.STREAM_CLOSED),
    ("HEADERS opening a stream below the last one", lambda p: p.headers(5) + p.headers(3), f.PROTOCOL_ERROR),
    ("HEADERS on an even stream from a client", lambda p: p.headers(2), f.PROTOCOL_ERROR),
    ("CONTINUATION without HEADERS", lambda p: frame(f.CONTINUATION, f.END_HEADERS, 1, p.block()), f.PROTOCOL_ERROR),
    (
        "CONTINUATION on another stream",
        lambda p: frame(f.HEADERS, 0, 1, p.block()[:3]) + frame(f.CONTINUATION, f.END_HEADERS, 3, b""),
        f.PROTOCOL_ERROR,
    ),
    (
        "another frame inside a header block",
        lambda p: frame(f.HEADERS, 0, 1, p.block()[:3]) + frame(f.PING, 0, 0, b"12345678"),
        f.PROTOCOL_ERROR,
    ),
    (
        "PUSH_PROMISE from a client",
        lambda p: p.headers(1) + frame(f.PUSH_PROMISE, f.END_HEADERS, 1, u32(2)),
        f.PROTOCOL_ERROR,
    ),
    ("an undecodable header block", lambda p: frame(f.HEADERS, f.END_HEADERS, 1, b"\x80"), f.COMPRESSION_ERROR),
    (
        "DATA over the connection window",
        lambda p: p.headers(1) + b"".join(frame(f.DATA, 0, 1, b"x" * 16_000) for _ in range(5)),
        f.FLOW_CONTROL_ERROR,
    ),
]


@pytest.mark.parametrize(("case", "make", "code"), CONNECTION_ERRORS, ids=[c[0] for c in CONNECTION_ERRORS])
def test_connection_errors_end_in_goaway_with_the_rfc_code(case: str, make, code: int) -> None:  # type: ignore[no-untyped-def]
    p = Peer(connection_window_size=65_535)
    if case == "HEADERS on a closed stream":
        p.feed(p.headers(1, end_stream=True))
        p.m.send_headers(1, [(b":status", b"200")], end_stream=True)
        p.m.data_to_send()
        events = p.feed(p.headers(1, end_stream=True))
    else:
        events = p.feed(make(p))
    failed_with(events, p, code)


def stream_error(p: Peer, data: bytes, sid: int, code: int) -> None:
    events = p.feed(data)
    assert not any(isinstance(e, ConnectionFailed) for e in events), events
    assert (sid, code) in p.resets()
    assert [(e.stream_id, e.error_code, e.remote) for e in events if isinstance(e, StreamReset)] == [(sid, code, False)]
    # The connection serves on: a new request on the next stream is decoded (HPACK kept in step).
    later = p.feed(p.headers(sid + 2, end_stream=True, fields=[*REQ, (b"x-after", b"1")]))
    assert [e.fields[-1] for e in later if isinstance(e, HeadersReceived)] == [(b"x-after", b"1")]


def test_data_after_end_stream_is_a_stream_closed_stream_error() -> None:
    p = Peer()
    p.feed(p.headers(1, end_stream=True))
    stream_error(p, frame(f.DATA, 0, 1, b"late"), 1, f.STREAM_CLOSED)


def test_trailers_without_end_stream_are_a_protocol_stream_error() -> None:
    p = Peer()
    p.feed(p.headers(1))
    stream_error(p, p.headers(1, fields=[(b"grpc-status", b"0")]), 1, f.PROTOCOL_ERROR)


def test_window_update_of_zero_on_a_stream_is_a_protocol_stream_error() -> None:
    p = Peer()
    p.feed(p.headers(1))
    stream_error(p, frame(f.WINDOW_UPDATE, 0, 1, u32(0)), 1, f.PROTOCOL_ERROR)


def test_a_stream_window_overflow_is_a_flow_control_stream_error() -> None:
    p = Peer()
    p.feed(p.headers(1))
    stream_error(p, frame(f.WINDOW_UPDATE, 0, 1, u32(2**31 - 1)), 1, f.FLOW_CONTROL_ERROR)


def test_data_over_the_stream_window_is_a_flow_control_stream_error() -> None:
    p = Peer(initial_window_size=10_000)
    p.feed(p.headers(1))
    stream_error(p, frame(f.DATA, 0, 1, b"x" * 10_001), 1, f.FLOW_CONTROL_ERROR)


def test_a_stream_depending_on_itself_is_a_protocol_stream_error_in_headers_and_priority() -> None:
    p = Peer()
    prio = u32(1) + b"\x10"
    stream_error(p, frame(f.HEADERS, f.END_HEADERS | f.PRIORITY_FLAG, 1, prio + p.block()), 1, f.PROTOCOL_ERROR)
    p = Peer()
    p.feed(p.headers(1))
    stream_error(p, frame(f.PRIORITY, 0, 1, u32(1) + b"\x10"), 1, f.PROTOCOL_ERROR)
    p = Peer()
    p.feed(p.headers(1))
    stream_error(p, frame(f.PRIORITY, 0, 1, u32(0)), 1, f.FRAME_SIZE_ERROR)


def test_a_body_longer_than_content_length_is_a_protocol_stream_error() -> None:
    p = Peer()
    p.feed(p.headers(1, fields=[*REQ, (b"content-length", b"3")]))
    stream_error(p, frame(f.DATA, f.END_STREAM, 1, b"four"), 1, f.PROTOCOL_ERROR)


def test_streams_past_max_concurrent_streams_are_refused_and_the_connection_serves_on() -> None:
    p = Peer(max_concurrent_streams=2)
    p.feed(p.headers(1) + p.headers(3))
    events = p.feed(p.headers(5))
    assert [(e.stream_id, e.error_code) for e in events if isinstance(e, StreamReset)] == [(5, f.REFUSED_STREAM)]
    assert p.resets() == [(5, f.REFUSED_STREAM)]
    p.feed(frame(f.DATA, f.END_STREAM, 1, b""))
    p.m.send_headers(1, [(b":status", b"200")], end_stream=True)
    assert [e.stream_id for e in p.feed(p.headers(7)) if isinstance(e, HeadersReceived)] == [7]


def test_priority_frames_and_fields_are_otherwise_ignored_and_unknown_frames_too() -> None:
    p = Peer()
    prio = u32(0) + b"\x10"
    events = p.feed(frame(f.PRIORITY, 0, 9, u32(0) + b"\x20") + frame(0xFA, 0, 0, b"whatever")
                    + frame(f.HEADERS, f.END_HEADERS | f.END_STREAM | f.PRIORITY_FLAG, 1, prio + p.block()))  # fmt: skip
    assert [(type(e), e.stream_id) for e in events] == [(HeadersReceived, 1)]
    assert p.m.data_to_send() == b""


def test_a_header_list_over_the_limit_is_reported_too_large_and_hpack_stays_in_step() -> None:
    p = Peer(max_header_list_size=200)
    big = [*REQ, (b"x-big", b"v" * 150)]
    [head] = p.feed(p.headers(1, end_stream=True, fields=big))
    assert isinstance(head, HeadersReceived) and head.too_large and head.list_size > 200
    [again] = p.feed(p.headers(3, end_stream=True, fields=big[:-1]))
    assert isinstance(again, HeadersReceived) and not again.too_large and again.fields == REQ


def test_a_header_block_over_twice_the_limit_is_enhance_your_calm() -> None:
    p = Peer(max_header_list_size=1000)
    block = p.block([*REQ, (b"x-big", b"v" * 3000)])
    events = p.feed(frame(f.HEADERS, 0, 1, block[:1500]) + frame(f.CONTINUATION, f.END_HEADERS, 1, block[1500:]))
    failed_with(events, p, f.ENHANCE_YOUR_CALM)


def test_continuation_flood_is_enhance_your_calm() -> None:
    p = Peer()
    block = p.block()
    data = frame(f.HEADERS, 0, 1, block[:2]) + b"".join(frame(f.CONTINUATION, 0, 1, b"") for _ in range(9))
    failed_with(p.feed(data), p, f.ENHANCE_YOUR_CALM)
    p = Peer()  # the same number of frames inside the limit decodes
    pieces = [block[:2], *[b""] * 7, block[2:]]
    data = frame(f.HEADERS, 0, 1, pieces[0]) + b"".join(
        frame(f.CONTINUATION, f.END_HEADERS if i == len(pieces) - 1 else 0, 1, piece)
        for i, piece in enumerate(pieces) if i)  # fmt: skip
    assert [e.fields for e in p.feed(data) if isinstance(e, HeadersReceived)] == [REQ]


def test_rapid_reset_is_enhance_your_calm_once_half_the_streams_are_reset_early() -> None:
    p = Peer(premature_reset_min_streams=100)
    events: list[Event] = []
    sid = 1
    for _ in range(49):  # 49 streams opened and reset before any answer: under the minimum yet
        events += p.feed(p.headers(sid) + frame(f.RST_STREAM, 0, sid, u32(8)))
        sid += 2
    assert not any(isinstance(e, ConnectionFailed) for e in events)
    for _ in range(51):
        events += p.feed(p.headers(sid) + frame(f.RST_STREAM, 0, sid, u32(8)))
        sid += 2
        if p.m.failed:
            break
    assert isinstance(events[-1], ConnectionFailed) and events[-1].error_code == f.ENHANCE_YOUR_CALM
    assert "rapid reset" in events[-1].message
    assert p.goaway() == (f.ENHANCE_YOUR_CALM, sid - 2)


def test_cancelling_streams_that_were_answered_is_not_a_rapid_reset() -> None:
    p = Peer(premature_reset_min_streams=10)
    for sid in range(1, 61, 2):
        p.feed(p.headers(sid))
        p.m.send_headers(sid, [(b":status", b"200")], end_stream=True)
        p.feed(frame(f.RST_STREAM, 0, sid, u32(8)))
    assert not p.m.failed


@pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
def test_ping_and_settings_floods_are_enhance_your_calm_but_read_acks_are_not(kind: str) -> None:
    one = frame(f.PING, 0, 0, b"12345678") if kind == "PING" else f.settings_frame([(f.MAX_CONCURRENT_STREAMS, 5)])
    p = Peer(max_outbound_control_frames=50)
    for _ in range(10):  # 500 in all, with the ACKs taken after each 50
        assert not any(isinstance(e, ConnectionFailed) for e in p.feed(one * 50))
        assert len(parse(p.m.data_to_send())) == 50
    failed_with(p.feed(one * 51), p, f.ENHANCE_YOUR_CALM)


def test_settings_with_too_many_entries_is_enhance_your_calm() -> None:
    p = Peer()
    failed_with(p.feed(f.settings_frame([(0x99, 1)] * 33)), p, f.ENHANCE_YOUR_CALM)


def test_empty_data_frames_in_a_row_are_enhance_your_calm() -> None:
    p = Peer()
    p.feed(p.headers(1))
    events = p.feed(frame(f.DATA, 0, 1) + frame(f.DATA, 0, 1, b"x") + frame(f.DATA, 0, 1))
    assert [type(e) for e in events] == [DataReceived]
    failed_with(p.feed(frame(f.DATA, 0, 1)), p, f.ENHANCE_YOUR_CALM)


def test_an_invalid_preface_and_a_first_frame_that_is_not_settings_are_protocol_errors() -> None:
    m = Machine(client=False)
    m.data_to_send()
    [failed] = m.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(failed, ConnectionFailed) and failed.error_code == f.PROTOCOL_ERROR
    m = Machine(client=False)
    m.data_to_send()
    [failed] = m.receive_data(f.PREFACE + frame(f.PING, 0, 0, b"12345678"))
    assert isinstance(failed, ConnectionFailed) and "first frame" in failed.message


def test_data_on_a_stream_we_reset_is_ignored_but_still_counted_against_the_window() -> None:
    p = Peer(connection_window_size=65_535)
    p.feed(p.headers(1))
    p.m.reset_stream(1)
    assert p.resets() == [(1, f.CANCEL)]
    for _ in range(8):  # 8 x 16000 bytes: twice the connection window, given back as it arrives
        assert p.feed(frame(f.DATA, 0, 1, b"x" * 16_000)) == []
    updates = [p for t, _, sid, p in parse(p.m.data_to_send()) if t == f.WINDOW_UPDATE and sid == 0]
    assert sum(int.from_bytes(u, "big") for u in updates) >= 65_535
    assert not p.m.failed
    [data] = p.feed(p.headers(3) + frame(f.DATA, 0, 3, b"y"))[1:]
    assert isinstance(data, DataReceived) and data.data == b"y"


# -- flood limits as rates (Envoy's and nghttp2's) ---------------------------------------------------
def test_priority_frames_past_a_hundred_per_stream_are_a_flood() -> None:
    p = Peer()
    prio = frame(f.PRIORITY, 0, 3, u32(0) + b"\x10")
    assert not any(isinstance(e, ConnectionFailed) for e in p.feed(prio * 100))  # 100 x (1 + 0 streams)
    p.feed(p.headers(1))
    assert not any(isinstance(e, ConnectionFailed) for e in p.feed(prio * 100))  # 100 x (1 + 1 stream)
    failed_with(p.feed(prio), p, f.ENHANCE_YOUR_CALM)


def test_window_updates_are_a_flood_unless_our_data_frames_or_new_streams_call_for_them() -> None:
    p = Peer()
    p.feed(p.headers(1))  # allows 1 + 2 x (1 stream + 10 x 0 DATA frames) = 3
    update = frame(f.WINDOW_UPDATE, 0, 0, u32(1))
    assert not any(isinstance(e, ConnectionFailed) for e in p.feed(update * 3))
    p.m.send_headers(1, [(b":status", b"200")])
    p.m.send_data(1, b"x" * 100)  # one DATA frame sent: 20 more
    p.m.data_to_send()
    assert not any(isinstance(e, ConnectionFailed) for e in p.feed(update * 20))
    failed_with(p.feed(update), p, f.ENHANCE_YOUR_CALM)


def test_control_frames_the_peer_does_not_read_count_across_reads_while_the_socket_is_blocked() -> None:
    ping = frame(f.PING, 0, 0, b"12345678")
    p = Peer(max_outbound_control_frames=50)
    for _ in range(10):  # written each time: never more than 40 waiting
        p.feed(ping * 40)
        p.m.data_to_send()
    assert not p.m.failed
    p.m.write_blocked(True)  # the peer stopped reading: what we take is not written yet
    p.feed(ping * 40)
    p.m.data_to_send()
    failed_with(p.feed(ping * 11), p, f.ENHANCE_YOUR_CALM)
    p = Peer(max_outbound_control_frames=50)
    p.m.write_blocked(True)
    p.feed(ping * 40)
    p.m.data_to_send()
    p.m.write_blocked(False)  # it drained: those 40 left
    assert not any(isinstance(e, ConnectionFailed) for e in p.feed(ping * 40))


def test_frames_queued_while_the_peer_does_not_read_are_an_outbound_flood() -> None:
    p = Peer(max_outbound_frames=20)
    p.feed(p.headers(1, end_stream=True))
    p.m.write_blocked(True)
    p.m.send_headers(1, [(b":status", b"200")])
    for _ in range(20):
        p.m.send_data(1, b"x")
        p.m.data_to_send()
    failed_with(p.feed(frame(f.PING, 0, 0, b"12345678")), p, f.ENHANCE_YOUR_CALM)


def test_stream_resets_past_the_token_bucket_are_rapid_reset_even_when_answered() -> None:
    now = [100.0]
    p = Peer(stream_reset_burst=10, stream_reset_rate=2.0, clock=lambda: now[0])

    def answered_then_reset(sid: int) -> list[Event]:
        p.feed(p.headers(sid))
        p.m.send_headers(sid, [(b":status", b"200")], end_stream=True)  # not premature: Envoy's rule is quiet
        return p.feed(frame(f.RST_STREAM, 0, sid, u32(8)))

    sid = 1
    for _ in range(10):
        answered_then_reset(sid)
        sid += 2
    assert not p.m.failed
    now[0] += 2.5  # 5 tokens back at 2/s
    for _ in range(5):
        answered_then_reset(sid)
        sid += 2
    assert not p.m.failed
    events = answered_then_reset(sid)
    assert isinstance(events[-1], ConnectionFailed) and "rapid reset" in events[-1].message
    assert p.goaway() == (f.ENHANCE_YOUR_CALM, sid)


def test_settings_not_acknowledged_in_time_is_a_settings_timeout() -> None:
    m = Machine(client=False)
    m.receive_data(f.PREFACE + f.settings_frame([]))
    m.data_to_send()
    assert m.settings_pending
    assert m.settings_overdue()
    gone = [p for t, _, _, p in parse(m.data_to_send()) if t == f.GOAWAY]
    assert [struct.unpack(">LL", g[:8])[1] for g in gone] == [f.SETTINGS_TIMEOUT]
    assert m.failed and m.receive_data(frame(f.PING, 0, 0, b"12345678")) == []
    m = Machine(client=False)
    m.receive_data(f.PREFACE + f.settings_frame([]) + f.SETTINGS_ACK)
    assert not m.settings_pending and not m.settings_overdue() and not m.failed


def test_a_peer_that_keeps_its_table_after_our_smaller_header_table_size_is_acknowledged_fails_compression() -> None:
    # hpack_table_size 0 (Envoy's field): the peer may index nothing once it acknowledged our SETTINGS,
    # and its next block must begin with the size update that empties its table (RFC 7541 4.2).
    p = Peer(header_table_size=0)
    before_ack = p.feed(p.headers(1, end_stream=True, fields=[*REQ, (b"x-indexed", b"1")]))
    assert [e.stream_id for e in before_ack if isinstance(e, HeadersReceived)] == [1]  # 4096 until the ACK
    p.feed(f.SETTINGS_ACK)
    failed_with(p.feed(p.headers(3, end_stream=True)), p, f.COMPRESSION_ERROR)


def test_a_size_update_above_our_acknowledged_header_table_size_fails_compression() -> None:
    p = Peer(header_table_size=100)
    p.feed(f.SETTINGS_ACK)
    p.enc.header_table_size = 200  # hpack's encoder then begins its next block with an update to 200
    failed_with(p.feed(p.headers(1, end_stream=True)), p, f.COMPRESSION_ERROR)
