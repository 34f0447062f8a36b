"""The Thrift codec, sans-IO: frames observed from thriftpy2 0.7.1, split at every offset."""

from __future__ import annotations

import pytest
from sofamesh_thrift.codec import APPLICATION_EXCEPTION, DECLARED_EXCEPTION, SUCCESS, ThriftCodec, ThriftCodecFactory
from sofamesh_thrift.frames import parse_header, read_application_exception

from sofamesh.core.codec import CodecLimits, ReplyStatus, Role, Sniff
from sofamesh.core.errors import RemoteProtocolError
from sofamesh.core.events import NEED_DATA, ConnectionClosed, RequestHead, ResponseHead

# Bytes written by thriftpy2 0.7.1 (TBinaryProtocol over a framed transport) for tests/echo.thrift.
CALL = bytes.fromhex("0000001a80010001000000046563686f000000070b000100000002686900")  # echo("hi"), seqid 7
CALL_MUX = bytes.fromhex("0000001f80010001000000094563686f3a6563686f000000070b000100000002686900")  # "Echo:echo"
CALL_NON_STRICT = bytes.fromhex("00000017000000046563686f01000000070b000100000002686900")
REPLY = bytes.fromhex("0000001a80010002000000046563686f000000070b000000000002686900")  # success "hi"
DECLARED = bytes.fromhex("0000001f80010002000000066c6f6f6b7570000000090c00010b0001000000016b0000")  # NotFound
ONEWAY = bytes.fromhex("0000001b80010004000000066e6f74696679000000000b0001000000016e00")  # notify("n")
EXC = bytes.fromhex("0000003280010003000000046e6f7065000000030b000100000013556e6b6e6f776e206d6574686f64206e6f70650800020000000100")


def _events(role: Role, chunks: list[bytes], limits: CodecLimits | None = None) -> list[object]:
    codec = ThriftCodec(role, limits or CodecLimits())
    out: list[object] = []
    for c in chunks:
        codec.receive_data(c)
        while (ev := codec.next_event()) is not NEED_DATA:
            out.append(ev)
    return out


def _splits(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(1, len(data))]


def test_a_strict_call_becomes_one_request_head_with_the_whole_frame_as_raw() -> None:
    [head] = _events(Role.SERVER, [CALL])
    assert isinstance(head, RequestHead)
    assert (head.protocol, head.request_id, head.service, head.method, head.oneway) == ("thrift", 7, "", "echo", False)
    assert head.raw == CALL and head.end_stream


def test_a_multiplexed_call_routes_on_its_service_prefix_and_method() -> None:
    [head] = _events(Role.SERVER, [CALL_MUX])
    assert isinstance(head, RequestHead)
    assert (head.service, head.method, head.key("service"), head.key("method")) == ("Echo", "echo", "Echo", "echo")


def test_a_non_strict_call_is_read_like_a_strict_one() -> None:
    [head] = _events(Role.SERVER, [CALL_NON_STRICT])
    assert isinstance(head, RequestHead)
    assert (head.request_id, head.method, head.raw) == (7, "echo", CALL_NON_STRICT)


def test_a_oneway_message_is_a_oneway_request() -> None:
    [head] = _events(Role.SERVER, [ONEWAY])
    assert isinstance(head, RequestHead) and head.oneway and head.method == "notify"


@pytest.mark.parametrize("frame", [CALL, CALL_MUX, CALL_NON_STRICT, ONEWAY], ids=["strict", "mux", "non-strict", "oneway"])
def test_every_split_of_a_request_gives_the_same_events(frame: bytes) -> None:
    whole = _events(Role.SERVER, [frame + frame])
    assert len(whole) == 2
    for chunks in _splits(frame + frame):
        assert _events(Role.SERVER, chunks) == whole


def test_byte_by_byte_feeding_gives_the_same_events() -> None:
    data = CALL + CALL_MUX + ONEWAY + CALL_NON_STRICT
    assert _events(Role.SERVER, [bytes([b]) for b in data]) == _events(Role.SERVER, [data])


@pytest.mark.parametrize(("frame", "status", "http"), [(REPLY, SUCCESS, 200), (DECLARED, DECLARED_EXCEPTION, 500),
                                                       (EXC, APPLICATION_EXCEPTION, 500)])
def test_replies_report_success_declared_exception_or_application_exception(frame: bytes, status: int, http: int) -> None:
    for chunks in [[frame], *_splits(frame)]:
        [head] = _events(Role.CLIENT, chunks)
        assert isinstance(head, ResponseHead)
        assert (head.status, head.http_status, head.raw) == (status, http, frame)
    [exc] = _events(Role.CLIENT, [EXC])
    assert isinstance(exc, ResponseHead)
    if frame is EXC:
        assert exc.reason == "Unknown method nope" and exc.request_id == 3


def test_rewriting_the_request_id_patches_only_the_seqid_in_both_header_styles() -> None:
    codec = ThriftCodec(Role.CLIENT, CodecLimits())
    for frame in (CALL, CALL_MUX, CALL_NON_STRICT, REPLY):
        out = codec.rewrite_request_id(frame, 0xFFFFFFFE)
        assert len(out) == len(frame)
        hdr, new = parse_header(frame), parse_header(out)
        assert new.seqid == 0xFFFFFFFE and (new.name, new.type, new.strict) == (hdr.name, hdr.type, hdr.strict)
        at = hdr.seqid_offset
        assert out[:at] == frame[:at] and out[at + 4 :] == frame[at + 4 :]
        assert codec.rewrite_request_id(out, 7) == frame


@pytest.mark.parametrize(("status", "exc_type"), [(ReplyStatus.NO_ROUTE, 1), (ReplyStatus.TIMEOUT, 6),
                                                  (ReplyStatus.OVERLOAD, 6), (ReplyStatus.DENIED, 0),
                                                  (ReplyStatus.NO_HEALTHY_UPSTREAM, 6), (ReplyStatus.CODEC_ERROR, 7)])
def test_local_replies_are_application_exceptions_in_the_clients_framing(status: ReplyStatus, exc_type: int) -> None:
    for frame in (CALL_MUX, CALL_NON_STRICT):
        [head] = _events(Role.SERVER, [frame])
        assert isinstance(head, RequestHead)
        out = ThriftCodec(Role.SERVER, CodecLimits()).local_reply(head, status, "why")
        hdr = parse_header(out)
        assert (hdr.type, hdr.seqid, hdr.name, hdr.strict) == (3, 7, "echo", parse_header(frame).strict)
        message, got_type = read_application_exception(out, hdr.body_offset)
        assert got_type == exc_type and message == f"sofamesh {status.http_status} {status.name.lower()}: why"
        [resp] = _events(Role.CLIENT, [out])
        assert isinstance(resp, ResponseHead) and resp.status == APPLICATION_EXCEPTION


def test_a_reply_sent_by_a_client_is_refused_with_a_head_to_answer() -> None:
    codec = ThriftCodec(Role.SERVER, CodecLimits())
    codec.receive_data(REPLY)
    with pytest.raises(RemoteProtocolError, match="a client sent a reply") as info:
        codec.next_event()
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 7
    with pytest.raises(RemoteProtocolError):
        codec.next_event()  # the codec stays broken


def test_an_oversized_frame_is_refused_with_a_413_hint_before_it_is_buffered() -> None:
    codec = ThriftCodec(Role.SERVER, CodecLimits(max_frame_bytes=20))
    codec.receive_data(CALL[:16])  # 26-byte frame announced, seqid not here yet
    assert codec.next_event() is NEED_DATA
    codec.receive_data(CALL[16:20])
    with pytest.raises(RemoteProtocolError, match="over the 20 byte limit") as info:
        codec.next_event()
    assert info.value.status_hint == 413
    assert isinstance(info.value.head, RequestHead) and info.value.head.method == "echo"


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x02ab", b"\x00\x00\x00\x0c\x80\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01",
                                 b"\x00\x00\x00\x0c\x80\x01\x00\x09\x00\x00\x00\x00\x00\x00\x00\x01",
                                 b"\x00\x00\x00\x0c\x00\x00\x00\x40abcdefg\x01"])
def test_malformed_frames_are_remote_protocol_errors(bad: bytes) -> None:
    codec = ThriftCodec(Role.SERVER, CodecLimits())
    codec.receive_data(bad)
    with pytest.raises(RemoteProtocolError, match="thrift: "):
        codec.next_event()


def test_the_peer_closing_mid_frame_is_an_unclean_close_reported_once() -> None:
    events = _events(Role.SERVER, [CALL + CALL[:5], b""])
    assert isinstance(events[0], RequestHead) and events[1:] == [ConnectionClosed(clean=False)]
    assert _events(Role.SERVER, [CALL, b""])[1:] == [ConnectionClosed(clean=True)]


def test_sniffing_matches_strict_and_non_strict_framed_messages_only() -> None:
    f = ThriftCodecFactory()
    for frame in (CALL, CALL_MUX, CALL_NON_STRICT, ONEWAY):
        assert f.sniff(frame[:8]) is Sniff.MATCH
        assert f.sniff(frame[:3]) is Sniff.NEED_MORE
    for other in (b"GET / HTTP/1.1\r\n", b"\x01\x01\x00\x01\x01\x00\x00\x00", b"\xda\xbb\xc2\x00\x00\x00\x00\x00",
                  b"PRI * HTTP/2.0\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01", b"\x00\x00\x00\x1a\x80\x02\x00\x01",
                  b"\x00\x00\x00\x1a\x80\x01\x00\x07", b"\x00\x00\x00\x05\x00\x00\x00\x01"):
        assert f.sniff(other[:8]) is Sniff.NO, other


def test_sending_a_head_returns_its_frame() -> None:
    codec = ThriftCodec(Role.CLIENT, CodecLimits())
    [head] = _events(Role.SERVER, [CALL])
    assert isinstance(head, RequestHead)
    assert codec.send(head) == CALL
