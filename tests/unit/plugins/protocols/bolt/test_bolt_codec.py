"""The Bolt codec on frames captured from real peers and on frames built to hit each edge."""

from __future__ import annotations

import zlib

import pytest

from sofamesh.core.build import proxy_host
from sofamesh.core.catalog import Catalog
from sofamesh.core.codec import CodecFactory, CodecLimits, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import NEED_DATA, ConnectionClosed, Event, Heartbeat, RequestHead, ResponseHead
from sofamesh.plugins.protocols.bolt import BoltCodec, BoltCodecFactory, Framing
from sofamesh.plugins.protocols.bolt import plugin as bolt_plugin
from sofamesh.plugins.protocols.bolt.frames import (
    CMD_HEARTBEAT,
    CODEC_PROTOBUF,
    SOFA_RESPONSE_CLASS,
    TYPE_ONEWAY,
    TYPE_RESPONSE,
    encode_header_map,
    encode_request,
    encode_response,
)
from tests.unit.plugins.protocols.bolt.bolt_captured import (
    ANTHUNDER_REQUEST,
    ANTHUNDER_RESPONSE,
    NODE_V1_REQUEST,
    NODE_V1_RESPONSE,
    NODE_V2_REQUEST,
    NODE_V2_RESPONSE,
    NODE_V2CRC_REQUEST,
    NODE_V2CRC_RESPONSE,
)

REQUESTS = {
    "node-v1": NODE_V1_REQUEST,
    "node-v2": NODE_V2_REQUEST,
    "node-v2crc": NODE_V2CRC_REQUEST,
    "anthunder": ANTHUNDER_REQUEST,
}
RESPONSES = {
    "node-v1": NODE_V1_RESPONSE,
    "node-v2": NODE_V2_RESPONSE,
    "node-v2crc": NODE_V2CRC_RESPONSE,
    "anthunder": ANTHUNDER_RESPONSE,
}
FRAMINGS = {
    "v1": Framing(),
    "v2": Framing(proto=2, ver1=1),
    "v2crc": Framing(proto=2, ver1=2, switch=1),
    "v1-protobuf": Framing(codec=CODEC_PROTOBUF),
}


def decode(role: Role, *chunks: bytes, limits: CodecLimits | None = None) -> list[Event]:
    codec = BoltCodec(role, limits or CodecLimits())
    events: list[Event] = []
    for chunk in chunks:
        codec.receive_data(chunk)
        for _ in range(10_000):
            ev = codec.next_event()
            if ev is NEED_DATA:
                break
            events.append(ev)  # type: ignore[arg-type]
    return events


def only(role: Role, frame: bytes) -> Event:
    events = decode(role, frame)
    assert len(events) == 1, events
    return events[0]


def comparable(ev: Event) -> object:
    # ``resolve`` is a fresh object per request; compare what it answers instead.
    if isinstance(ev, RequestHead):
        return (ev.request_id, ev.service, ev.method, ev.version, ev.group, ev.headers, ev.oneway, ev.raw,
                ev.timeout_ms, ev.meta, ev.key("method"))
    return ev


@pytest.mark.parametrize(("role", "frame"), [
    *((Role.SERVER, f) for f in REQUESTS.values()),
    *((Role.CLIENT, f) for f in RESPONSES.values()),
], ids=[*(f"request-{n}" for n in REQUESTS), *(f"response-{n}" for n in RESPONSES)])
def test_a_captured_frame_gives_the_same_events_whatever_the_split(role: Role, frame: bytes) -> None:
    two = frame + frame
    whole = [comparable(e) for e in decode(role, two)]
    assert len(whole) == 2
    for cut in range(1, len(two)):
        assert [comparable(e) for e in decode(role, two[:cut], two[cut:])] == whole, cut
    assert [comparable(e) for e in decode(role, *(two[i : i + 1] for i in range(len(two))))] == whole


def test_a_sofa_rpc_node_request_routes_by_service_and_reads_the_method_from_the_body_lazily() -> None:
    head = only(Role.SERVER, NODE_V1_REQUEST)
    assert isinstance(head, RequestHead)
    assert (head.protocol, head.request_id, head.oneway, head.end_stream) == ("bolt", 1, False, True)
    assert head.service == "com.example.EchoService:1.0"
    assert (head.version, head.group) == ("1.0", "")
    assert head.method == ""  # sofa-rpc-node with hessian sends only the ``service`` header
    assert head.key("method") == "echo"
    assert head.key("interface") == "com.example.EchoService"
    assert head.key("service") == "com.example.EchoService:1.0"
    assert head.timeout_ms == 3000
    assert head.raw == NODE_V1_REQUEST


def test_an_anthunder_request_routes_by_its_sofa_head_keys_without_touching_the_body() -> None:
    head = only(Role.SERVER, ANTHUNDER_REQUEST)
    assert isinstance(head, RequestHead)
    assert (head.service, head.method) == ("com.example.Py", "echo")
    assert head.headers.get("sofa_head_target_app") == ""
    assert head.headers.get("uid") == ""
    assert head.key("rpc_trace_context.sofaRpcId") == "1"
    assert isinstance(head.meta, Framing) and head.meta.codec == CODEC_PROTOBUF


@pytest.mark.parametrize(("name", "crc"), [("node-v2", False), ("node-v2crc", True)])
def test_v2_frames_are_read_with_and_without_crc(name: str, crc: bool) -> None:
    head = only(Role.SERVER, REQUESTS[name])
    resp = only(Role.CLIENT, RESPONSES[name])
    assert isinstance(head, RequestHead) and isinstance(resp, ResponseHead)
    assert isinstance(head.meta, Framing) and head.meta.has_crc is crc
    assert head.meta.proto == 2 and head.meta.ver1 == (2 if crc else 1)
    assert head.service == "com.example.EchoService:1.0" and head.key("method") == "echo"
    assert (resp.request_id, resp.status, resp.http_status) == (1, 0, 200)
    if crc:
        assert zlib.crc32(head.raw[:-4]) == int.from_bytes(head.raw[-4:], "big")  # type: ignore[index]


def test_a_crc_mismatch_is_a_protocol_error_that_still_names_the_request() -> None:
    bad = NODE_V2CRC_REQUEST[:-1] + bytes([NODE_V2CRC_REQUEST[-1] ^ 0x01])
    with pytest.raises(RemoteProtocolError, match="CRC32") as info:
        decode(Role.SERVER, bad)
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 1


def test_the_header_map_keeps_empty_values_and_leaves_out_null_ones() -> None:
    header = encode_header_map([
        ("sofa_head_target_service", None),
        ("service", "com.acme.Svc:2.0:blue"),
        ("sofa_head_method_name", ""),
        ("x-tenant", ""),
        ("x-null", None),
    ])
    frame = encode_request(42, header=header, class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
                           content=b"\x00", timeout_ms=-1)
    head = only(Role.SERVER, frame)
    assert isinstance(head, RequestHead)
    assert head.service == "com.acme.Svc:2.0:blue"
    assert (head.version, head.group, head.key("unique_id")) == ("2.0", "blue", "blue")
    assert head.method == "" and head.key("method") is None
    assert head.headers.items() == [("service", "com.acme.Svc:2.0:blue"), ("sofa_head_method_name", ""),
                                    ("x-tenant", "")]
    assert "x-null" not in head.headers
    assert head.timeout_ms is None


def test_header_maps_of_equal_length_alternating_on_one_connection_each_decode_as_sent() -> None:
    # A connection's last header map is reused when the next frame carries the same bytes; maps of
    # the same length that differ (here by one letter of the service) must still decode as sent.
    blocks = [encode_header_map([("service", f"com.acme.Svc{c}:1.0"), ("sofa_head_method_name", "echo")])
              for c in "ABA"]
    assert len({len(b) for b in blocks}) == 1
    frames = b"".join(encode_request(i + 1, header=b) for i, b in enumerate(blocks))
    frames += encode_request(4, header=encode_header_map([("service", "com.acme.SvcB:1.0")]))
    frames += encode_request(5)
    heads = decode(Role.SERVER, frames)
    assert [(h.request_id, h.service, h.method) for h in heads if isinstance(h, RequestHead)] == [
        (1, "com.acme.SvcA:1.0", "echo"), (2, "com.acme.SvcB:1.0", "echo"), (3, "com.acme.SvcA:1.0", "echo"),
        (4, "com.acme.SvcB:1.0", ""), (5, "", "")]
    assert [len(h.headers) for h in heads if isinstance(h, RequestHead)] == [2, 2, 2, 1, 0]


def test_sofa_head_target_service_wins_over_service() -> None:
    header = encode_header_map([("service", "a.B:1.0"), ("sofa_head_target_service", "c.D:2.0")])
    head = only(Role.SERVER, encode_request(1, header=header))
    assert isinstance(head, RequestHead) and head.service == "c.D:2.0"


@pytest.mark.parametrize("header", [b"\x00\x00\x00\x05ab", b"\x00\x00\x00\x01a", b"\xff\xff\xff\xffab",
                                    b"\x00\x00\x00\x01a\xff\xff\xff\xfe"])
def test_a_malformed_header_map_is_a_protocol_error_with_the_request_id(header: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="header map") as info:
        decode(Role.SERVER, encode_request(9, header=header))
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 9


@pytest.mark.parametrize("frame", [*REQUESTS.values(), *RESPONSES.values()],
                         ids=[*(f"request-{n}" for n in REQUESTS), *(f"response-{n}" for n in RESPONSES)])
def test_a_frame_corrupted_at_any_byte_never_raises_anything_but_a_protocol_error(frame: bytes) -> None:
    role = Role.SERVER if frame in REQUESTS.values() else Role.CLIENT
    for pos in range(len(frame)):
        for mask in (0xFF, 0x80, 0x01):
            bad = frame[:pos] + bytes([frame[pos] ^ mask]) + frame[pos + 1 :]
            codec = BoltCodec(role, CodecLimits())
            codec.receive_data(bad)
            codec.receive_data(b"")
            try:
                for _ in range(10):
                    ev = codec.next_event()
                    if ev is NEED_DATA:
                        break
                    if isinstance(ev, RequestHead):
                        ev.key("method")
                        ev.key("interface")
            except RemoteProtocolError:
                with pytest.raises(RemoteProtocolError):  # and it stays failed
                    codec.next_event()


@pytest.mark.parametrize("name", list(REQUESTS))
def test_rewriting_the_request_id_keeps_the_frame_valid(name: str) -> None:
    codec = BoltCodec(Role.CLIENT, CodecLimits())
    for new_id in (0, 7, 0xFFFFFFFF):
        out = codec.rewrite_request_id(REQUESTS[name], new_id)
        head = only(Role.SERVER, out)  # a CRC'd frame with a stale CRC would raise here
        assert isinstance(head, RequestHead) and head.request_id == new_id
        assert len(out) == len(REQUESTS[name])
        resp = only(Role.CLIENT, codec.rewrite_request_id(RESPONSES[name], new_id))
        assert isinstance(resp, ResponseHead) and resp.request_id == new_id


@pytest.mark.parametrize("new_id", [0, 1, 0x01020304, 0xFFFFFFFF])
def test_rewriting_a_v1_request_id_changes_only_its_four_bytes(new_id: int) -> None:
    out = BoltCodec(Role.CLIENT, CodecLimits()).rewrite_request_id(NODE_V1_REQUEST, new_id)
    assert out[:5] == NODE_V1_REQUEST[:5] and out[9:] == NODE_V1_REQUEST[9:]
    assert out[5:9] == bytes(((new_id >> 24) & 255, (new_id >> 16) & 255, (new_id >> 8) & 255, new_id & 255))


@pytest.mark.parametrize("new_id", [1 << 32, -1])
def test_a_request_id_outside_32_bits_cannot_be_written(new_id: int) -> None:
    with pytest.raises(LocalProtocolError, match="32 bits"):
        BoltCodec(Role.CLIENT, CodecLimits()).rewrite_request_id(NODE_V1_REQUEST, new_id)


EXPECTED_STATUS = {
    ReplyStatus.NO_ROUTE: 6, ReplyStatus.NO_HEALTHY_UPSTREAM: 6, ReplyStatus.TIMEOUT: 7,
    ReplyStatus.OVERLOAD: 4, ReplyStatus.RATE_LIMITED: 4, ReplyStatus.CODEC_ERROR: 9,
    ReplyStatus.PAYLOAD_TOO_LARGE: 9, ReplyStatus.HEADERS_TOO_LARGE: 9, ReplyStatus.DENIED: 2,
    ReplyStatus.UNAUTHENTICATED: 2, ReplyStatus.UPSTREAM_RESET: 0x10, ReplyStatus.INTERNAL: 3,
    ReplyStatus.UPSTREAM_OVERFLOW: 4, ReplyStatus.REQUEST_TIMEOUT: 7,
}


def test_every_reply_status_is_its_own_member_so_bolt_can_tell_them_apart() -> None:
    assert set(EXPECTED_STATUS) == set(ReplyStatus) and len(ReplyStatus) == len(ReplyStatus.__members__)
    assert ReplyStatus.OVERLOAD is not ReplyStatus.NO_HEALTHY_UPSTREAM


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("status", list(ReplyStatus))
def test_a_local_reply_parses_back_with_the_request_id_framing_and_mapped_status(
        framing: str, status: ReplyStatus) -> None:
    service = encode_header_map([("service", "a.B:1.0")])
    request = encode_request(0xDEADBEEF, FRAMINGS[framing], header=service)
    head = only(Role.SERVER, request)
    assert isinstance(head, RequestHead)
    reply = BoltCodec(Role.SERVER, CodecLimits()).local_reply(head, status, "why")
    resp = only(Role.CLIENT, reply)
    assert isinstance(resp, ResponseHead)
    assert resp.request_id == 0xDEADBEEF
    assert resp.status == EXPECTED_STATUS[status]
    assert resp.meta == FRAMINGS[framing]
    hlen = 20 if FRAMINGS[framing].proto == 1 else 22
    assert reply[hlen : hlen + len(SOFA_RESPONSE_CLASS)] == SOFA_RESPONSE_CLASS
    assert resp.http_status == {0: 200, 4: 503, 7: 504, 0x10: 502}.get(resp.status, 500)


def test_status_maps_to_http_classes_as_mosn_does() -> None:
    codec = BoltCodec(Role.CLIENT, CodecLimits())
    assert [codec.map_status(s) for s in (0, 1, 2, 3, 4, 6, 7, 9, 0x10, 0x12)] == [
        200, 500, 500, 500, 503, 500, 504, 500, 502, 500]


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_heartbeats_round_trip_in_the_framing_last_seen(framing: str) -> None:
    client = BoltCodec(Role.CLIENT, CodecLimits())
    client.receive_data(encode_response(3, 0, FRAMINGS[framing]))
    assert isinstance(client.next_event(), ResponseHead)
    probe = client.heartbeat(77)
    beat = only(Role.SERVER, probe)
    assert isinstance(beat, Heartbeat) and (beat.request_id, beat.reply) == (77, False)
    assert isinstance(beat.meta, Framing) and beat.meta.proto == FRAMINGS[framing].proto
    assert beat.meta.has_crc is FRAMINGS[framing].has_crc
    answer = BoltCodec(Role.SERVER, CodecLimits()).heartbeat_reply(beat)
    ack = only(Role.CLIENT, answer)
    assert isinstance(ack, Heartbeat) and (ack.request_id, ack.reply) == (77, True)


def test_a_heartbeat_from_an_upstream_is_a_probe_to_answer() -> None:
    beat = only(Role.CLIENT, encode_request(5, cmdcode=CMD_HEARTBEAT, timeout_ms=3000))
    assert isinstance(beat, Heartbeat) and (beat.request_id, beat.reply) == (5, False)


def test_a_oneway_request_is_marked_oneway() -> None:
    frame = encode_request(4, type_=TYPE_ONEWAY, header=encode_header_map([("service", "x")]))
    head = only(Role.SERVER, frame)
    assert isinstance(head, RequestHead) and head.oneway and head.service == "x"


def test_a_frame_over_max_frame_bytes_is_rejected_with_413_and_the_request_id() -> None:
    frame = encode_request(11, content=b"x" * 2000)
    with pytest.raises(RemoteProtocolError, match="max_frame_bytes") as info:
        decode(Role.SERVER, frame[:30], limits=CodecLimits(max_frame_bytes=1024))  # before the body arrives
    assert info.value.status_hint == 413
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 11


def test_a_header_map_over_max_header_bytes_is_rejected_with_431() -> None:
    frame = encode_request(12, header=encode_header_map([("k", "v" * 100)]))
    with pytest.raises(RemoteProtocolError, match="max_header_bytes") as info:
        decode(Role.SERVER, frame, limits=CodecLimits(max_header_bytes=64))
    assert info.value.status_hint == 431
    assert isinstance(info.value.head, RequestHead) and info.value.head.request_id == 12


def test_an_oversized_oneway_request_gets_no_reply_head() -> None:
    frame = encode_request(13, type_=TYPE_ONEWAY, content=b"x" * 2000)
    with pytest.raises(RemoteProtocolError) as info:
        decode(Role.SERVER, frame, limits=CodecLimits(max_frame_bytes=1024))
    assert info.value.head is None


@pytest.mark.parametrize("first", [b"\x00", b"\x03", b"\xda\xbb", b"GET "])
def test_bytes_that_are_not_bolt_are_a_protocol_error_without_a_head(first: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="bolt") as info:
        decode(Role.SERVER, first + bytes(30))
    assert info.value.head is None


def test_a_server_side_codec_rejects_responses_and_a_client_side_codec_rejects_requests() -> None:
    with pytest.raises(RemoteProtocolError, match="server-side"):
        decode(Role.SERVER, NODE_V1_RESPONSE)
    with pytest.raises(RemoteProtocolError, match="client-side") as info:
        decode(Role.CLIENT, NODE_V1_REQUEST)
    assert info.value.head is None  # never answer an upstream with a local reply


def test_an_unknown_v2_protocol_version_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="ver1=3"):
        decode(Role.SERVER, b"\x02\x03" + NODE_V2_REQUEST[2:])


def test_the_peer_closing_is_reported_once_and_says_whether_a_frame_was_cut() -> None:
    assert decode(Role.SERVER, NODE_V1_REQUEST, b"")[1:] == [ConnectionClosed(clean=True)]
    assert decode(Role.SERVER, NODE_V1_REQUEST[:10], b"") == [ConnectionClosed(clean=False)]


def test_send_returns_the_raw_frame_of_a_framed_head() -> None:
    codec = BoltCodec(Role.SERVER, CodecLimits())
    head = only(Role.SERVER, NODE_V1_REQUEST)
    assert codec.send(head) == NODE_V1_REQUEST
    built = codec.send(ResponseHead(protocol="bolt", request_id=3, status=7, http_status=504))
    resp = only(Role.CLIENT, built)
    assert isinstance(resp, ResponseHead) and (resp.request_id, resp.status) == (3, 7)
    assert built[1] == TYPE_RESPONSE
    with pytest.raises(LocalProtocolError):
        codec.send(RequestHead(protocol="bolt"))


@pytest.mark.parametrize(("prefix", "verdict"), [
    (b"", Sniff.NEED_MORE), (b"\x01", Sniff.MATCH), (b"\x02\x02", Sniff.MATCH), (b"\xda\xbb", Sniff.NO),
    (b"GET / HTTP/1.1", Sniff.NO), (b"PRI * HTTP/2.0", Sniff.NO),
])
def test_the_factory_sniffs_bolt_v1_and_v2_by_the_first_byte(prefix: bytes, verdict: Sniff) -> None:
    assert BoltCodecFactory().sniff(prefix) is verdict


def test_the_factory_is_a_multiplexed_32_bit_protocol_named_bolt() -> None:
    factory = BoltCodecFactory()
    assert (factory.name, factory.multiplexed, factory.request_id_bits) == ("bolt", True, 32)
    codec = factory.new_codec(Role.SERVER, CodecLimits(max_frame_bytes=100))
    assert isinstance(codec, BoltCodec) and codec.role is Role.SERVER and codec.limits.max_frame_bytes == 100


def test_the_plugin_registers_bolt_in_the_protocol_catalog() -> None:
    catalog: Catalog[CodecFactory] = Catalog("protocol")
    bolt_plugin.sofamesh_register_protocols(catalog)
    assert isinstance(catalog.get("bolt"), BoltCodecFactory)


def test_the_bolt_entry_point_is_installed_and_loads() -> None:
    host = proxy_host()
    assert host.available()["bolt"].target == "sofamesh.plugins.protocols.bolt.plugin"
    host.load(["bolt"])
    catalog = host.fill("sofamesh_register_protocols", Catalog("protocol"))
    assert isinstance(catalog.get("bolt"), BoltCodecFactory)


def test_a_header_map_with_lengths_counted_in_characters_by_old_java_peers_still_parses() -> None:
    def char_counted(s: str) -> bytes:
        return len(s).to_bytes(4, "big") + s.encode()

    header = char_counted("service") + char_counted("com.acme.Svc:1.0") + char_counted("x-tenant") + char_counted(
        "租户-a")
    head = only(Role.SERVER, encode_request(3, header=header))
    assert isinstance(head, RequestHead)
    assert head.service == "com.acme.Svc:1.0" and head.headers.get("x-tenant") == "租户-a"
