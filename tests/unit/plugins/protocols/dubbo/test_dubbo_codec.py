"""The Dubbo codec: events from real peer frames, split anywhere; replies; limits; bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sofamesh.core.build import proxy_host
from sofamesh.core.catalog import Catalog
from sofamesh.core.codec import CodecFactory, CodecLimits, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import NEED_DATA, ConnectionClosed, Event, Heartbeat, RequestHead, ResponseHead
from sofamesh.core.hessian import HessianReader
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec, DubboCodecFactory
from sofamesh.plugins.protocols.dubbo.frames import encode_frame, encode_request

# Captured on loopback: npm dubbo2.js 2.3.9 (DirectlyDubbo) -> npm @dubbo.ts/provider 2.0.7.
# Request 1: greet(com.sofamesh.demo.Person{name: "bob", n: 3}) version 1.0.0 group g1.
REQ_GREET = bytes.fromhex(
    "dabbc2000000000000000001000000ed05322e302e321d636f6d2e736f66616d6573682e64656d6f2e4563686f5365727669"
    "636505312e302e300567726565741a4c636f6d2f736f66616d6573682f64656d6f2f506572736f6e3b4318636f6d2e736f66"
    "616d6573682e64656d6f2e506572736f6e92046e616d65016e6003626f6293480b6170706c69636174696f6e09647562626f"
    "322e6a730567726f757002673109696e746572666163651d636f6d2e736f66616d6573682e64656d6f2e4563686f53657276"
    "69636504706174681d636f6d2e736f66616d6573682e64656d6f2e4563686f536572766963650776657273696f6e05312e30"
    "2e305a"
)
# Request 2: x.Y fail("boom"), service version null, no group.
REQ_FAIL = bytes.fromhex(
    "dabbc20000000000000000020000006505322e302e3203782e594e046661696c124c6a6176612f6c616e672f537472696e67"
    "3b04626f6f6d480b6170706c69636174696f6e09647562626f322e6a7309696e7465726661636503782e59047061746803782e"
    "590776657273696f6e05302e302e305a"
)
# Response to 2: status 70 (the provider writes a result flag before the message); to 1: 20, flag 4.
RES_FAIL = bytes.fromhex(
    "dabb0246000000000000000200000030930870313a20626f6f6d4805647562626f05322e302e320974696d657374616d700d"
    "313739353631333536303432325a"
)
RES_GREET = bytes.fromhex(
    "dabb02140000000000000001000000489448086772656574696e670968656c6c6f20626f62016e93046e616d6503626f625a"
    "4805647562626f05322e302e320974696d657374616d700d313739353631333536303432345a"
)
HEARTBEAT = bytes.fromhex("dabbe2000000000000000000000000014e")  # dubbo2.js HeartBeat.encode()

LIMITS = CodecLimits()


def split(*chunks: bytes) -> list[bytes]:
    """The non-empty chunks (an empty chunk would mean the peer closed)."""
    return [c for c in chunks if c]


def events(codec: DubboCodec, chunks: list[bytes]) -> list[Event]:
    out: list[Event] = []
    for chunk in chunks:
        codec.receive_data(chunk)
        for _ in range(1000):
            ev = codec.next_event()
            if ev is NEED_DATA:
                break
            assert not isinstance(ev, type(NEED_DATA))
            out.append(ev)
    return out


def request_frame(
    *, service: str = "com.example.Echo", version: str | None = "1.0.0", method: str = "echo",
    types: str = "Ljava/lang/String;", args: bytes = b"\x02hi", attachments: dict[str, str] | None = None,
    request_id: int = 7, flag: int = 0xC2,
) -> bytes:
    frame = encode_request(request_id, service, method, version=version, parameter_types=types, args=args,
                           attachments=attachments)
    return frame[:2] + bytes((flag,)) + frame[3:]


def test_captured_request_becomes_a_request_head_carrying_the_whole_frame() -> None:
    [head] = events(DubboCodec(Role.SERVER, LIMITS), [REQ_GREET])
    assert isinstance(head, RequestHead)
    assert (head.protocol, head.request_id, head.service, head.version, head.method) == (
        "dubbo", 1, "com.sofamesh.demo.EchoService", "1.0.0", "greet")
    assert head.raw == REQ_GREET and head.end_stream and not head.oneway


def test_group_and_any_attachment_resolve_lazily_through_the_key_lookup() -> None:
    [head] = events(DubboCodec(Role.SERVER, LIMITS), [REQ_GREET])
    assert isinstance(head, RequestHead)
    assert head.group == ""
    assert head.key("group") == "g1"
    assert head.key("application") == "dubbo2.js"
    assert head.key("interface") == "com.sofamesh.demo.EchoService"
    assert head.key("parameter_types") == "Lcom/sofamesh/demo/Person;"
    assert head.key("dubbo_version") == "2.0.2"
    assert head.key("no-such-key") is None


def test_null_service_version_is_empty_and_resolves_from_attachments() -> None:
    [head] = events(DubboCodec(Role.SERVER, LIMITS), [REQ_FAIL])
    assert isinstance(head, RequestHead)
    assert (head.service, head.version, head.method) == ("x.Y", "", "fail")
    assert head.key("version") == "0.0.0"
    assert head.key("group") is None


def test_arguments_are_not_read_until_a_route_asks_for_an_attachment() -> None:
    # Garbage where the arguments are: the head is still routable; only attachments are lost.
    frame = request_frame(args=b"\x40\x40\x40", attachments={"group": "g"})
    [head] = events(DubboCodec(Role.SERVER, LIMITS), [frame])
    assert isinstance(head, RequestHead) and head.method == "echo"
    assert head.key("group") is None


def test_every_split_of_a_stream_gives_the_same_events() -> None:
    stream = REQ_GREET + HEARTBEAT + REQ_FAIL
    whole = events(DubboCodec(Role.SERVER, LIMITS), [stream])
    assert [type(e) for e in whole] == [RequestHead, Heartbeat, RequestHead]
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1, 37):
            parts = events(DubboCodec(Role.SERVER, LIMITS), split(stream[:i], stream[i:j], stream[j:]))
            assert [(type(e), getattr(e, "raw", None), getattr(e, "request_id", None)) for e in parts] == [
                (type(e), getattr(e, "raw", None), getattr(e, "request_id", None)) for e in whole]


def test_response_frames_pass_through_byte_for_byte_with_mapped_status() -> None:
    stream = RES_FAIL + RES_GREET
    for i in range(len(stream) + 1):
        got = events(DubboCodec(Role.CLIENT, LIMITS), split(stream[:i], stream[i:]))
        heads = [(e.request_id, e.status, e.http_status, e.raw) for e in got if isinstance(e, ResponseHead)]
        assert heads == [(2, 70, 500, RES_FAIL), (1, 20, 200, RES_GREET)]


@pytest.mark.parametrize("flag_value", range(6))
def test_every_result_flag_is_forwarded_untouched(flag_value: int) -> None:
    body = bytes((0x90 + flag_value,)) + {0: b"\x03err", 1: b"\x91", 2: b"", 3: b"\x03errHZ",
                                          4: b"\x91HZ", 5: b"HZ"}[flag_value]
    frame = encode_frame(0x02, 20, 99, body)
    codec = DubboCodec(Role.CLIENT, LIMITS)
    [res] = events(codec, [frame])
    assert isinstance(res, ResponseHead) and res.raw == frame and res.status == 20
    assert codec.send(res) == frame


def test_heartbeat_request_is_answered_with_an_event_response_of_status_20() -> None:
    codec = DubboCodec(Role.SERVER, LIMITS)
    [beat] = events(codec, [HEARTBEAT])
    assert beat == Heartbeat(request_id=0, reply=False, raw=HEARTBEAT, meta=0xE2)
    reply = codec.heartbeat_reply(beat)
    assert reply == bytes.fromhex("dabb2214") + bytes(8) + bytes.fromhex("000000014e")
    [answer] = events(DubboCodec(Role.CLIENT, LIMITS), [reply])
    assert isinstance(answer, Heartbeat) and answer.reply and answer.request_id == 0


def test_heartbeats_in_both_directions_on_the_upstream_side() -> None:
    up = DubboCodec(Role.CLIENT, LIMITS)
    probe = up.heartbeat(2**63 + 5)
    assert probe[:4] == bytes.fromhex("dabbe200") and probe[16:] == b"N"
    # the provider answers our probe, and sends its own probe (as @dubbo.ts does)
    got = events(up, [DubboCodec(Role.SERVER, LIMITS).heartbeat_reply(Heartbeat(2**63 + 5)), HEARTBEAT])
    assert [(type(e), e.request_id, e.reply) for e in got if isinstance(e, Heartbeat)] == [
        (Heartbeat, 2**63 + 5, True), (Heartbeat, 0, False)]


def test_oneway_event_and_oneway_request_get_no_reply() -> None:
    codec = DubboCodec(Role.SERVER, LIMITS)
    oneway_event = encode_frame(0xA2, 0, 3, b"N")
    oneway_call = request_frame(flag=0x82, request_id=4)
    beat, head = events(codec, [oneway_event, oneway_call])
    assert isinstance(beat, Heartbeat) and codec.heartbeat_reply(beat) == b""
    assert isinstance(head, RequestHead) and head.oneway
    assert codec.local_reply(head, ReplyStatus.NO_ROUTE, "x") == b""


@pytest.mark.parametrize("new_id", [0, 1, 2**32, 2**63, 2**64 - 1])
def test_request_id_rewrite_changes_only_the_id(new_id: int) -> None:
    codec = DubboCodec(Role.SERVER, LIMITS)
    out = codec.rewrite_request_id(REQ_GREET, new_id)
    assert out[:4] == REQ_GREET[:4] and out[12:] == REQ_GREET[12:]
    [head] = events(DubboCodec(Role.SERVER, LIMITS), [out])
    assert isinstance(head, RequestHead) and head.request_id == new_id
    with pytest.raises(LocalProtocolError):
        codec.rewrite_request_id(REQ_GREET, 2**64)
    with pytest.raises(LocalProtocolError):
        codec.rewrite_request_id(REQ_GREET, -1)
    with pytest.raises(LocalProtocolError):
        codec.rewrite_request_id(b"\x01\x02", 1)


EXPECTED_STATUS = {
    ReplyStatus.NO_ROUTE: 60, ReplyStatus.NO_HEALTHY_UPSTREAM: 60, ReplyStatus.TIMEOUT: 30, ReplyStatus.REQUEST_TIMEOUT: 31,
    ReplyStatus.OVERLOAD: 100, ReplyStatus.RATE_LIMITED: 40, ReplyStatus.CODEC_ERROR: 40,
    ReplyStatus.DENIED: 80, ReplyStatus.INTERNAL: 70, ReplyStatus.UPSTREAM_RESET: 70,
    ReplyStatus.UNAUTHENTICATED: 80, ReplyStatus.PAYLOAD_TOO_LARGE: 40, ReplyStatus.HEADERS_TOO_LARGE: 40,
    ReplyStatus.UPSTREAM_OVERFLOW: 100,
}


@pytest.mark.parametrize("status", list(ReplyStatus))
def test_local_reply_is_a_dubbo_response_that_decodes_back(status: ReplyStatus) -> None:
    [head] = events(DubboCodec(Role.SERVER, LIMITS), [REQ_GREET])
    assert isinstance(head, RequestHead)
    message = "no route for com.sofamesh.demo.EchoService 😀"
    frame = DubboCodec(Role.SERVER, LIMITS).local_reply(head, status, message)
    [res] = events(DubboCodec(Role.CLIENT, LIMITS), [frame])
    assert isinstance(res, ResponseHead)
    assert (res.request_id, res.status, frame[2]) == (1, EXPECTED_STATUS[status], 0x02)
    text = HessianReader(frame, 16).read_string()
    assert text.startswith(f"{status.http_status}|") and text.endswith(message)


def test_no_route_reply_reads_like_mosn() -> None:
    [head] = events(DubboCodec(Role.SERVER, LIMITS), [REQ_FAIL])
    assert isinstance(head, RequestHead)
    frame = DubboCodec(Role.SERVER, LIMITS).local_reply(head, ReplyStatus.NO_ROUTE, "")
    assert HessianReader(frame, 16).read_string() == "404|router unavailable"


@pytest.mark.parametrize(("status", "http"), [(20, 200), (30, 504), (31, 504), (40, 400), (50, 502),
                                              (60, 404), (70, 500), (80, 500), (90, 500), (100, 503),
                                              (7, 500)])
def test_status_maps_to_http(status: int, http: int) -> None:
    assert DubboCodec(Role.CLIENT, LIMITS).map_status(status) == http


def test_long_and_non_ascii_names_are_read_exactly() -> None:
    service = "com.例子." + "Ω" * 40 + "😀" * 700 + ".Service"
    method = "méthode_" + "x" * 3000
    version = "版本-1.0"
    frame = request_frame(service=service, method=method, version=version, attachments={"group": "组"})
    for i in (0, 1, 16, 17, len(frame) // 2, len(frame) - 1):
        [head] = events(DubboCodec(Role.SERVER, LIMITS), split(frame[:i], frame[i:]))
        assert isinstance(head, RequestHead)
        assert (head.service, head.method, head.version) == (service, method, version)
        assert head.key("group") == "组"


def test_frame_over_the_limit_is_rejected_with_the_request_id() -> None:
    codec = DubboCodec(Role.SERVER, CodecLimits(max_frame_bytes=64))
    codec.receive_data(REQ_GREET[:16])
    with pytest.raises(RemoteProtocolError, match="max_frame_bytes=64") as info:
        codec.next_event()
    assert info.value.status_hint == 413
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 1
    with pytest.raises(RemoteProtocolError):  # the codec stays failed
        codec.next_event()


def test_head_strings_over_the_header_limit_are_rejected_with_431() -> None:
    codec = DubboCodec(Role.SERVER, CodecLimits(max_header_bytes=32))
    codec.receive_data(REQ_GREET)
    with pytest.raises(RemoteProtocolError, match="max_header_bytes=32") as info:
        codec.next_event()
    assert info.value.status_hint == 431 and isinstance(info.value.head, RequestHead)


def test_negative_body_length_and_bad_magic_are_protocol_errors() -> None:
    codec = DubboCodec(Role.SERVER, LIMITS)
    codec.receive_data(bytes.fromhex("dabbc200") + (9).to_bytes(8, "big") + b"\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError, match="negative body length") as info:
        codec.next_event()
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 9
    codec = DubboCodec(Role.SERVER, LIMITS)
    codec.receive_data(b"\x01\x02")
    with pytest.raises(RemoteProtocolError, match="bad magic") as info:
        codec.next_event()
    assert info.value.head is None


def test_other_serializations_are_refused_with_a_head_for_the_reply() -> None:
    codec = DubboCodec(Role.SERVER, LIMITS)
    codec.receive_data(request_frame(flag=0xC6, request_id=11))  # serialization id 6 (fastjson)
    with pytest.raises(RemoteProtocolError, match="serialization id 6") as info:
        codec.next_event()
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 11


def test_unreadable_body_head_is_an_error_carrying_the_request_id() -> None:
    codec = DubboCodec(Role.SERVER, LIMITS)
    codec.receive_data(encode_frame(0xC2, 0, 12, b"\x05ab"))
    with pytest.raises(RemoteProtocolError, match="request id 12") as info:
        codec.next_event()
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 12


def test_wrong_direction_frames_are_protocol_errors() -> None:
    server = DubboCodec(Role.SERVER, LIMITS)
    server.receive_data(RES_GREET)
    with pytest.raises(RemoteProtocolError, match="consumer sent a response"):
        server.next_event()
    client = DubboCodec(Role.CLIENT, LIMITS)
    client.receive_data(REQ_GREET)
    with pytest.raises(RemoteProtocolError, match="provider sent a request"):
        client.next_event()


def test_close_is_reported_once_clean_or_not() -> None:
    assert events(DubboCodec(Role.SERVER, LIMITS), [REQ_FAIL, b""])[1:] == [ConnectionClosed(clean=True)]
    assert events(DubboCodec(Role.SERVER, LIMITS), [REQ_FAIL[:20], b""]) == [ConnectionClosed(clean=False)]
    codec = DubboCodec(Role.SERVER, LIMITS)
    events(codec, [b""])
    assert codec.next_event() is NEED_DATA
    with pytest.raises(RemoteProtocolError):
        codec.receive_data(b"x")


def test_send_returns_raw_frames_and_encodes_heartbeats() -> None:
    codec = DubboCodec(Role.SERVER, LIMITS)
    [head] = events(codec, [REQ_GREET])
    assert codec.send(head) == REQ_GREET
    assert codec.send(Heartbeat(request_id=5)) == codec.heartbeat_reply(Heartbeat(request_id=5))
    assert codec.send(Heartbeat(request_id=5, reply=True)) == codec.heartbeat(5)
    with pytest.raises(LocalProtocolError):
        codec.send(ResponseHead(protocol="dubbo"))


def test_sniffing_matches_the_magic_only() -> None:
    f = DubboCodecFactory()
    assert (f.sniff(b""), f.sniff(b"\xda"), f.sniff(b"\xda\xbb"), f.sniff(b"\xda\xbc"), f.sniff(b"\x01")) == (
        Sniff.NEED_MORE, Sniff.NEED_MORE, Sniff.MATCH, Sniff.NO, Sniff.NO)
    assert f.request_id_bits == 64 and f.multiplexed and f.sniff_bytes == 2


def test_the_entry_point_registers_dubbo_in_the_protocol_catalog() -> None:
    host = proxy_host()
    host.load(["dubbo"])
    catalog: Catalog[CodecFactory] = host.fill("sofamesh_register_protocols", Catalog("protocol"))
    assert isinstance(catalog.get("dubbo"), DubboCodecFactory)
    assert catalog.provenance("dubbo").distribution == "sofamesh"


mutations = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(which=st.sampled_from([REQ_GREET, REQ_FAIL, HEARTBEAT, RES_FAIL, RES_GREET]), edits=mutations,
       cut=st.integers(0, 400), role=st.sampled_from([Role.SERVER, Role.CLIENT]))
def test_corrupted_bytes_raise_nothing_but_remote_protocol_error(
    which: bytes, edits: list[tuple[int, int]], cut: int, role: Role
) -> None:
    data = bytearray(which)
    for pos, value in edits:
        data[pos % len(data)] = value
    codec = DubboCodec(role, LIMITS)
    try:
        for ev in events(codec, [*split(bytes(data[:cut]), bytes(data[cut:])), b""]):
            if isinstance(ev, RequestHead):
                for key in ("group", "version", "application", "x"):
                    ev.key(key)
                codec.local_reply(ev, ReplyStatus.CODEC_ERROR, "bad")
    except RemoteProtocolError as exc:
        if exc.head is not None:
            assert isinstance(exc.head, RequestHead)
            codec.local_reply(exc.head, ReplyStatus.CODEC_ERROR, str(exc))
