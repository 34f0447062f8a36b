"""The http2 codec against bytes produced by a real HTTP/2 stack (h2 as the peer), split anywhere."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from sofamesh.core.build import proxy_host
from sofamesh.core.catalog import Catalog
from sofamesh.core.codec import CodecFactory, CodecLimits, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfMessage,
    GoAway,
    Heartbeat,
    RequestHead,
    ResponseHead,
)
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.http2 import PREFACE, Http2Codec, Http2CodecFactory, StreamReset, WindowOpened

GRPC_PATH = "/echo.v1.Echo/Say"


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_request_headers(**extra: str) -> list[tuple[str, str]]:
    fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", GRPC_PATH),
        (":authority", "echo.local:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "1500m"),
        ("tri-service-version", "1.0.0"),
        ("tri-service-group", "blue"),
    ]
    fields.extend(extra.items())
    return fields


class Peer:
    """A real h2 connection on the other end of the codec."""

    def __init__(self, client: bool = True, **settings: int) -> None:
        config = h2.config.H2Configuration(client_side=client, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(
                client=client,
                initial_values={getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()},
            )
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []

    def out(self) -> bytes:
        return self.conn.data_to_send()

    def feed(self, data: bytes) -> list[h2.events.Event]:
        got = self.conn.receive_data(data)
        self.events.extend(got)
        return got


def drain(codec: Http2Codec) -> list[object]:
    events: list[object] = []
    for _ in range(10_000):
        ev = codec.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)
    raise AssertionError("codec kept producing events")


def connect(
    role: Role = Role.SERVER, peer_settings: dict[str, int] | None = None, **codec_kw: int
) -> tuple[Http2Codec, Peer]:
    """A codec and a peer that have exchanged prefaces and SETTINGS (and their ACKs)."""
    codec = Http2Codec(role, CodecLimits(), **codec_kw)
    peer = Peer(client=role is Role.SERVER, **(peer_settings or {}))
    for _ in range(2):
        codec.receive_data(peer.out())
        assert [e for e in drain(codec) if not isinstance(e, WindowOpened)] == []
        peer.feed(codec.data_to_send())
    return codec, peer


def grpc_unary_bytes() -> bytes:
    peer = Peer()
    peer.conn.send_headers(1, grpc_request_headers())
    peer.conn.send_data(1, grpc_message(b"hello"), end_stream=True)
    return peer.out()


# -- sniffing -----------------------------------------------------------------------------------
def test_the_h2c_preface_is_sniffed_and_other_protocols_are_not() -> None:
    factory = Http2CodecFactory()
    assert factory.sniff_bytes == 24 == len(PREFACE)
    assert factory.sniff(PREFACE + b"\x00\x00") is Sniff.MATCH
    assert factory.sniff(PREFACE[:10]) is Sniff.NEED_MORE
    assert factory.sniff(b"") is Sniff.NEED_MORE
    assert factory.sniff(b"GET / HTTP/1.1\r\n") is Sniff.NO
    assert factory.sniff(b"PRI * HTTP/1.1") is Sniff.NO
    assert factory.sniff(b"\x01\x01\x00\x01") is Sniff.NO
    assert factory.alpn_protocols == ("h2",)
    assert factory.multiplexed


def test_the_http2_entry_point_registers_the_factory_in_the_protocol_catalog() -> None:
    host = proxy_host()
    host.load(["http2"])
    catalog: Catalog[CodecFactory] = host.fill("sofamesh_register_protocols", Catalog("protocol"))
    assert isinstance(catalog.get("http2"), Http2CodecFactory)
    assert catalog.provenance("http2").distribution == "sofamesh"


# -- requests in ------------------------------------------------------------------------------------
def test_grpc_request_head_carries_service_method_version_group_and_deadline() -> None:
    codec = Http2Codec(Role.SERVER, CodecLimits())
    codec.receive_data(grpc_unary_bytes())
    events = drain(codec)
    assert [type(e) for e in events] == [RequestHead, BodyChunk, EndOfMessage]
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.protocol == "http2"
    assert head.request_id == 1
    assert (head.service, head.method, head.path) == ("echo.v1.Echo", "Say", GRPC_PATH)
    assert (head.version, head.group) == ("1.0.0", "blue")
    assert head.timeout_ms == 1500
    assert head.end_stream is False
    assert head.raw is None
    assert head.headers.get(":authority") == "echo.local:50051"
    assert head.headers.items()[:4] == grpc_request_headers()[:4]
    assert head.key("tri-service-group") == "blue"
    assert events[1] == BodyChunk(grpc_message(b"hello"), stream_id=1)
    assert events[2] == EndOfMessage(trailers=None, stream_id=1)


def test_the_same_request_block_again_gives_the_same_head_under_its_own_stream_id() -> None:
    peer = Peer()
    for sid in (1, 3, 5):  # the second and third blocks are the first one's HPACK indices
        peer.conn.send_headers(sid, grpc_request_headers(), end_stream=sid == 5)
        if sid != 5:
            peer.conn.send_data(sid, grpc_message(b"hi"), end_stream=True)
    wire = peer.out()
    codec = Http2Codec(Role.SERVER, CodecLimits())
    codec.receive_data(wire)
    heads = [e for e in drain(codec) if isinstance(e, RequestHead)]
    assert [h.request_id for h in heads] == [1, 3, 5]
    assert [h.end_stream for h in heads] == [False, False, True]
    for h in heads:
        assert (h.service, h.method, h.path, h.version, h.group, h.timeout_ms) == (
            "echo.v1.Echo", "Say", GRPC_PATH, "1.0.0", "blue", 1500)  # fmt: skip
        assert h.headers.items() == grpc_request_headers()
        assert h.key("host") == "echo.local:50051"
    # A codec with a lower header count limit answers the same block 431, however often it was read.
    strict = Http2Codec(Role.SERVER, CodecLimits(max_headers=8))
    strict.receive_data(wire)
    assert drain(strict) == []


@pytest.mark.parametrize("chunk", [1, 7, 24, 25, 100])
def test_a_grpc_call_split_into_any_chunk_size_gives_the_same_events(chunk: int) -> None:
    wire = grpc_unary_bytes()
    whole = Http2Codec(Role.SERVER, CodecLimits())
    whole.receive_data(wire)
    expected = drain(whole)
    codec = Http2Codec(Role.SERVER, CodecLimits())
    got: list[object] = []
    for start in range(0, len(wire), chunk):
        codec.receive_data(wire[start : start + chunk])
        got.extend(drain(codec))
    assert got == expected


def test_a_grpc_call_split_at_every_offset_gives_the_same_events() -> None:
    wire = grpc_unary_bytes()
    whole = Http2Codec(Role.SERVER, CodecLimits())
    whole.receive_data(wire)
    expected = drain(whole)
    for cut in range(1, len(wire)):
        codec = Http2Codec(Role.SERVER, CodecLimits())
        codec.receive_data(wire[:cut])
        got = drain(codec)
        codec.receive_data(wire[cut:])
        got += drain(codec)
        assert got == expected, f"split at {cut}"


def test_plain_http_get_routes_on_authority_and_http_method_with_no_end_of_message() -> None:
    codec, peer = connect()
    peer.conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":path", "/api/x?y=1"), (":authority", "web.local")],
        end_stream=True,
    )
    codec.receive_data(peer.out())
    events = drain(codec)
    assert len(events) == 1
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.service, head.method, head.path) == ("web.local", "GET", "/api/x?y=1")
    assert head.end_stream is True
    assert head.timeout_ms is None


def test_many_streams_interleave_and_each_event_names_its_stream() -> None:
    codec, peer = connect()
    for sid in (1, 3, 5):
        peer.conn.send_headers(sid, grpc_request_headers())
    for sid in (5, 1, 3):
        peer.conn.send_data(sid, grpc_message(f"m{sid}".encode()), end_stream=True)
    codec.receive_data(peer.out())
    events = drain(codec)
    heads = [e.request_id for e in events if isinstance(e, RequestHead)]
    chunks = [(e.stream_id, e.data[5:]) for e in events if isinstance(e, BodyChunk)]
    ends = [e.stream_id for e in events if isinstance(e, EndOfMessage)]
    assert heads == [1, 3, 5]
    assert chunks == [(5, b"m5"), (1, b"m1"), (3, b"m3")]
    assert ends == [5, 1, 3]


def test_request_trailers_come_as_end_of_message_with_trailers() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers())
    peer.conn.send_data(1, grpc_message(b"x"))
    peer.conn.send_headers(1, [("x-checksum", "abc")], end_stream=True)
    codec.receive_data(peer.out())
    events = drain(codec)
    assert [type(e) for e in events] == [RequestHead, BodyChunk, EndOfMessage]
    assert events[2] == EndOfMessage(trailers=Headers([("x-checksum", "abc")]), stream_id=1)


# -- responses out ------------------------------------------------------------------------------------
def test_response_head_body_and_grpc_trailers_reach_a_real_client() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=False)
    peer.conn.send_data(1, grpc_message(b"ping"), end_stream=True)
    codec.receive_data(peer.out())
    drain(codec)
    wire = codec.send(
        ResponseHead(
            "http2",
            request_id=1,
            status=200,
            end_stream=False,
            headers=Headers([(":status", "503"), ("content-type", "application/grpc"), ("Connection", "keep-alive")]),
        )
    )
    wire += codec.send(BodyChunk(grpc_message(b"pong"), stream_id=1))
    trailers = Headers([("grpc-status", "0"), ("grpc-message", "")])
    wire += codec.send(EndOfMessage(trailers=trailers, stream_id=1))
    got = peer.feed(wire)
    response = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
    assert dict(response.headers) == {":status": "200", "content-type": "application/grpc"}
    data = next(e for e in got if isinstance(e, h2.events.DataReceived))
    assert data.data == grpc_message(b"pong")
    trailers = next(e for e in got if isinstance(e, h2.events.TrailersReceived))
    assert dict(trailers.headers) == {"grpc-status": "0", "grpc-message": ""}
    assert any(isinstance(e, h2.events.StreamEnded) for e in got)
    assert codec.open_streams == 1  # the request body is not acknowledged yet
    codec.acknowledge(1, 9)
    assert codec.open_streams == 0


# -- flow control -------------------------------------------------------------------------------------
def test_received_body_holds_the_peer_window_until_acknowledged() -> None:
    codec, peer = connect(initial_window_size=65_535, connection_window_size=65_535)
    peer.conn.send_headers(1, grpc_request_headers())
    window = peer.conn.local_flow_control_window(1)
    assert window == 65_535
    body = b"z" * window
    step = peer.conn.max_outbound_frame_size
    for start in range(0, window, step):
        peer.conn.send_data(1, body[start : start + step])
    codec.receive_data(peer.out())
    chunks = [e for e in drain(codec) if isinstance(e, BodyChunk)]
    assert sum(len(c.data) for c in chunks) == window
    peer.feed(codec.data_to_send())
    assert peer.conn.local_flow_control_window(1) == 0  # nothing returned before the acknowledgement
    update = codec.acknowledge(1, window)
    got = peer.feed(update)
    assert {e.stream_id for e in got if isinstance(e, h2.events.WindowUpdated)} == {0, 1}
    assert peer.conn.local_flow_control_window(1) == window


def responding(peer_window: int) -> tuple[Http2Codec, Peer]:
    """A server codec that started its response on stream 1 to a peer with this stream window."""
    codec, peer = connect(peer_settings={"initial_window_size": peer_window})
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=True)
    codec.receive_data(peer.out())
    drain(codec)
    peer.feed(codec.send(ResponseHead("http2", request_id=1, end_stream=False)))
    return codec, peer


def test_send_accepts_only_the_window_and_window_opened_follows_the_peers_update() -> None:
    codec, peer = responding(1000)
    assert codec.sendable(1) == 1000
    with pytest.raises(LocalProtocolError, match="exceed its send window of 1000"):
        codec.send(BodyChunk(b"a" * 1001, stream_id=1))
    got = peer.feed(codec.send(BodyChunk(b"a" * 1000, stream_id=1)))
    assert sum(len(e.data) for e in got if isinstance(e, h2.events.DataReceived)) == 1000
    assert codec.sendable(1) == 0
    peer.conn.acknowledge_received_data(1000, 1)
    peer.conn.increment_flow_control_window(500, stream_id=1)
    codec.receive_data(peer.out())
    assert WindowOpened(1) in drain(codec)
    assert codec.sendable(1) == 1500
    assert codec.sendable(99) == 0


def test_large_body_is_cut_into_frames_no_larger_than_the_peers_max_frame_size() -> None:
    codec, peer = responding(100_000)
    got = peer.feed(codec.send(BodyChunk(b"b" * 50_000, stream_id=1)))
    sizes = [len(e.data) for e in got if isinstance(e, h2.events.DataReceived)]
    assert sum(sizes) == 50_000
    assert max(sizes) <= 16_384


# -- RST_STREAM, GOAWAY, PING ---------------------------------------------------------------------
def test_peer_reset_is_a_stream_reset_event_and_returns_its_unacknowledged_bytes() -> None:
    codec, peer = connect(connection_window_size=65_535)
    peer.conn.send_headers(1, grpc_request_headers())
    peer.conn.send_data(1, b"q" * 16_000)
    peer.conn.send_data(1, b"q" * 16_000)
    peer.conn.send_data(1, b"q" * 8_000)
    codec.receive_data(peer.out())
    drain(codec)
    peer.feed(codec.data_to_send())
    assert peer.conn.outbound_flow_control_window == 65_535 - 40_000
    peer.conn.reset_stream(1, error_code=8)
    codec.receive_data(peer.out())
    events = drain(codec)
    assert events == [StreamReset(1, 8, "CANCEL")]
    peer.feed(codec.data_to_send())
    assert peer.conn.outbound_flow_control_window == 65_535
    assert codec.open_streams == 0
    assert codec.acknowledge(1, 40_000) == b""  # the kernel's late acknowledgement adds nothing


def test_reset_sends_rst_stream_to_the_peer() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers())
    codec.receive_data(peer.out())
    drain(codec)
    got = peer.feed(codec.reset(1))
    resets = [e for e in got if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(1, 8)]
    assert codec.reset(1) == b""


def test_peer_goaway_is_a_goaway_event_with_the_last_stream_id() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=True)
    peer.conn.close_connection(error_code=0, additional_data=b"draining", last_stream_id=0)
    codec.receive_data(peer.out())
    events = drain(codec)
    assert isinstance(events[0], RequestHead)
    assert events[1] == GoAway(reason="NO_ERROR: draining", last_request_id=0)
    assert codec.keep_alive is False


def test_sending_goaway_tells_the_client_which_streams_were_processed() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=True)
    codec.receive_data(peer.out())
    drain(codec)
    assert codec.keep_alive is True
    got = peer.feed(codec.send(GoAway(reason="shutdown")))
    assert codec.keep_alive is False
    term = next(e for e in got if isinstance(e, h2.events.ConnectionTerminated))
    assert (term.error_code, term.last_stream_id, term.additional_data) == (0, 1, b"shutdown")


def test_a_peers_ping_is_answered_inside_the_codec() -> None:
    codec, peer = connect()
    peer.conn.ping(b"12345678")
    codec.receive_data(peer.out())
    assert drain(codec) == []
    got = peer.feed(codec.data_to_send())
    assert [e.ping_data for e in got if isinstance(e, h2.events.PingAckReceived)] == [b"12345678"]


def test_heartbeat_is_a_ping_whose_ack_comes_back_as_a_heartbeat_reply() -> None:
    codec, peer = connect(Role.CLIENT)
    got = peer.feed(codec.heartbeat(42))
    assert [e.ping_data for e in got if isinstance(e, h2.events.PingReceived)] == [(42).to_bytes(8, "big")]
    codec.receive_data(peer.out())
    assert drain(codec) == [Heartbeat(request_id=42, reply=True)]


# -- local replies ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (ReplyStatus.NO_ROUTE, 12),
        (ReplyStatus.NO_HEALTHY_UPSTREAM, 14),
        (ReplyStatus.TIMEOUT, 4),
        (ReplyStatus.RATE_LIMITED, 8),
        (ReplyStatus.DENIED, 7),
    ],
)
def test_grpc_local_reply_is_a_trailers_only_response_with_the_grpc_status(status: ReplyStatus, code: int) -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=False)
    peer.conn.send_data(1, grpc_message(b"hi"), end_stream=True)
    codec.receive_data(peer.out())
    head = drain(codec)[0]
    assert isinstance(head, RequestHead)
    got = peer.feed(codec.local_reply(head, status, "no route for echo.v1.Echo/Say: 100% sure ✓"))
    response = [e for e in got if isinstance(e, h2.events.ResponseReceived)]
    assert len(response) == 1
    fields = dict(response[0].headers)
    assert fields[":status"] == "200"
    assert fields["content-type"] == "application/grpc"
    assert fields["grpc-status"] == str(code)
    assert fields["grpc-message"] == "no route for echo.v1.Echo/Say: 100%25 sure %E2%9C%93"
    assert fields["x-sofamesh-local-reply"] == status.name.lower()
    assert response[0].stream_ended is not None  # trailers-only: HEADERS carries END_STREAM
    assert not any(isinstance(e, h2.events.DataReceived) for e in got)


def test_grpc_local_reply_to_a_request_still_sending_stops_it_with_rst_stream_no_error() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=False)
    codec.receive_data(peer.out())
    head = drain(codec)[0]
    assert isinstance(head, RequestHead)
    got = peer.feed(codec.local_reply(head, ReplyStatus.NO_HEALTHY_UPSTREAM, "down"))
    kinds = [h2.events.ResponseReceived, h2.events.StreamEnded, h2.events.StreamReset]
    assert [type(e) for e in got] == kinds
    assert got[2].error_code == 0
    assert codec.open_streams == 0


def test_grpc_local_reply_after_the_response_started_goes_out_as_trailers() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=True)
    codec.receive_data(peer.out())
    head = drain(codec)[0]
    assert isinstance(head, RequestHead)
    peer.feed(
        codec.send(
            ResponseHead(
                "http2", request_id=1, end_stream=False, headers=Headers([("content-type", "application/grpc")])
            )
        )
    )
    got = peer.feed(codec.local_reply(head, ReplyStatus.TIMEOUT, "upstream timed out"))
    trailers = next(e for e in got if isinstance(e, h2.events.TrailersReceived))
    assert dict(trailers.headers) == {"grpc-status": "4", "grpc-message": "upstream timed out"}


def test_plain_http2_local_reply_is_the_http_status_with_a_text_body() -> None:
    codec, peer = connect()
    peer.conn.send_headers(
        1, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "web.local")], end_stream=True
    )
    codec.receive_data(peer.out())
    head = drain(codec)[0]
    assert isinstance(head, RequestHead)
    got = peer.feed(codec.local_reply(head, ReplyStatus.NO_ROUTE, "no route for web.local/"))
    fields = dict(next(e for e in got if isinstance(e, h2.events.ResponseReceived)).headers)
    assert fields[":status"] == "404"
    assert fields["x-sofamesh-local-reply"] == "no_route"
    assert fields["content-type"].startswith("text/plain")
    body = b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived))
    assert body == b"no route for web.local/\n"
    assert fields["content-length"] == str(len(body))
    assert codec.local_reply(head, ReplyStatus.INTERNAL, "again") == b""  # answered once only


def test_too_many_request_headers_are_answered_431_without_a_request_head() -> None:
    codec = Http2Codec(Role.SERVER, CodecLimits(max_headers=10))
    peer = Peer()
    peer.conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
        + [(f"x-h{i}", "v") for i in range(10)],
        end_stream=True,
    )
    codec.receive_data(peer.out())
    assert drain(codec) == []
    got = peer.feed(codec.data_to_send())
    fields = dict(next(e for e in got if isinstance(e, h2.events.ResponseReceived)).headers)
    assert fields[":status"] == "431"


# -- connection errors and close ------------------------------------------------------------------------
def test_bytes_that_are_not_http2_raise_a_remote_protocol_error_and_queue_a_goaway() -> None:
    codec = Http2Codec(Role.SERVER, CodecLimits())
    codec.data_to_send()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="preamble"):
        codec.next_event()
    with pytest.raises(RemoteProtocolError):
        codec.next_event()  # the codec stays failed


def test_a_frame_that_breaks_http2_raises_and_queues_a_goaway_with_protocol_error() -> None:
    codec, peer = connect()
    codec.receive_data(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # DATA on stream 0
    with pytest.raises(RemoteProtocolError, match="http2") as info:
        codec.next_event()
    assert info.value.head is None
    got = peer.feed(codec.data_to_send())
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 1 for e in got)


def test_peer_close_is_connection_closed_clean_only_without_open_streams() -> None:
    codec, peer = connect()
    codec.receive_data(b"")
    assert drain(codec) == [ConnectionClosed(clean=True)]
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers())
    codec.receive_data(peer.out())
    codec.receive_data(b"")
    assert [type(e) for e in drain(codec)] == [RequestHead, ConnectionClosed]
    codec.receive_data(b"")
    assert drain(codec) == []


# -- client role (upstream) -------------------------------------------------------------------------
def test_client_role_opens_a_grpc_stream_and_decodes_response_and_trailers() -> None:
    codec, server = connect(Role.CLIENT)
    downstream = Http2Codec(Role.SERVER, CodecLimits())
    downstream.receive_data(grpc_unary_bytes())
    head, chunk, _end = drain(downstream)
    assert isinstance(head, RequestHead)
    assert isinstance(chunk, BodyChunk)
    sid = codec.new_stream_id()
    assert sid == 1
    up = codec.send(
        RequestHead(
            "http2",
            request_id=sid,
            service=head.service,
            method=head.method,
            path=head.path,
            headers=head.headers,
            end_stream=False,
        )
    )
    up += codec.send(BodyChunk(chunk.data, stream_id=sid))
    up += codec.send(EndOfMessage(stream_id=sid))
    got = server.feed(up)
    request = next(e for e in got if isinstance(e, h2.events.RequestReceived))
    assert request.headers == grpc_request_headers()
    assert next(e for e in got if isinstance(e, h2.events.DataReceived)).data == grpc_message(b"hello")
    assert codec.new_stream_id() == 3

    server.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    server.conn.send_data(sid, grpc_message(b"world"))
    server.conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    codec.receive_data(server.out())
    events = [e for e in drain(codec) if not isinstance(e, WindowOpened)]
    assert [type(e) for e in events] == [ResponseHead, BodyChunk, EndOfMessage]
    response = events[0]
    assert isinstance(response, ResponseHead)
    assert (response.request_id, response.status, response.http_status) == (sid, 200, 200)
    assert response.end_stream is False
    assert events[1] == BodyChunk(grpc_message(b"world"), stream_id=sid)
    assert events[2] == EndOfMessage(trailers=Headers([("grpc-status", "0")]), stream_id=sid)


def test_end_follows_only_a_chunk_whose_data_frame_carried_end_stream() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers())
    peer.conn.send_data(1, grpc_message(b"a"), end_stream=True)  # DATA(END_STREAM)
    peer.conn.send_headers(3, grpc_request_headers())
    peer.conn.send_data(3, grpc_message(b"b"))
    peer.conn.send_headers(3, [("x-checksum", "abc")], end_stream=True)  # trailers end it
    codec.receive_data(peer.out())
    seen: list[tuple[str, bool]] = []
    for _ in range(10):
        ev = codec.next_event()
        if ev is NEED_DATA:
            break
        if isinstance(ev, BodyChunk):
            seen.append((ev.data.decode()[-1], codec.end_follows(ev.stream_id)))
            assert not codec.end_follows(ev.stream_id + 2)  # another stream's end is not this one's
    assert seen == [("a", True), ("b", False)]
    assert not codec.end_follows(1)  # nothing decoded


def test_send_last_puts_end_stream_on_the_last_data_frame_and_ends_the_stream() -> None:
    codec, server = connect(Role.CLIENT, peer_settings={"max_frame_size": 16384})
    sid = codec.new_stream_id()
    up = codec.send(RequestHead("http2", request_id=sid, service="echo.local", method="POST", path=GRPC_PATH,
                                headers=Headers(grpc_request_headers()), end_stream=False))
    body = grpc_message(b"x" * 20000)  # two DATA frames at the peer's 16384
    up += codec.send_last(BodyChunk(body, stream_id=sid))
    frames: list[tuple[int, int, int]] = []
    at = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") if up.startswith(b"PRI") else 0
    while at < len(up):
        length = int.from_bytes(up[at : at + 3], "big")
        frames.append((up[at + 3], up[at + 4], length))
        at += 9 + length
    data = [(flags, length) for ftype, flags, length in frames if ftype == 0x0]
    assert data == [(0, 16384), (0x1, len(body) - 16384)]  # END_STREAM on the last, no empty DATA
    got = server.feed(up)
    assert b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived)) == body
    assert any(isinstance(e, h2.events.StreamEnded) for e in got)
    with pytest.raises(LocalProtocolError):
        codec.send(BodyChunk(b"more", stream_id=sid))  # the stream is closed for sending
    sid = codec.new_stream_id()
    codec.send(RequestHead("http2", request_id=sid, service="echo.local", method="POST", path=GRPC_PATH,
                           headers=Headers(grpc_request_headers()), end_stream=False))
    with pytest.raises(LocalProtocolError, match="send window"):
        codec.send_last(BodyChunk(b"x" * 70000, stream_id=sid))  # over the peer's 65535


def test_client_role_maps_a_trailers_only_grpc_error_to_its_http_status() -> None:
    codec, server = connect(Role.CLIENT)
    sid = codec.new_stream_id()
    server.feed(
        codec.send(RequestHead("http2", request_id=sid, headers=Headers(grpc_request_headers()), end_stream=True))
    )
    server.conn.send_headers(
        sid,
        [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
            ("grpc-message", "unavailable"),
        ],
        end_stream=True,
    )
    codec.receive_data(server.out())
    events = [e for e in drain(codec) if not isinstance(e, WindowOpened)]
    assert len(events) == 1
    response = events[0]
    assert isinstance(response, ResponseHead)
    assert (response.status, response.http_status, response.end_stream) == (200, 503, True)
    assert codec.open_streams == 0


def test_the_same_response_block_maps_grpc_status_only_when_it_ends_the_stream() -> None:
    codec, server = connect(Role.CLIENT)
    fields = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "14")]
    got = []
    for ended in (False, True, False):
        sid = codec.new_stream_id()
        head = RequestHead("http2", request_id=sid, headers=Headers(grpc_request_headers()), end_stream=True)
        server.feed(codec.send(head))
        server.conn.send_headers(sid, fields, end_stream=ended)
        codec.receive_data(server.out())
        got += [(e.status, e.http_status, e.end_stream) for e in drain(codec) if isinstance(e, ResponseHead)]
    assert got == [(200, 200, False), (200, 503, True), (200, 200, False)]


def test_heads_sharing_one_headers_object_are_sent_with_their_own_pseudo_header_fields() -> None:
    codec, server = connect(Role.CLIENT)
    headers = Headers([("content-type", "application/grpc"), ("te", "trailers")])
    for path in ("/a.B/C", "/a.B/C", "/a.B/D"):
        sid = codec.new_stream_id()
        server.feed(codec.send(RequestHead("http2", sid, "a.B", path[5:], path, headers=headers, end_stream=True)))
    got = [dict(e.headers) for e in server.events if isinstance(e, h2.events.RequestReceived)]
    assert [g[":path"] for g in got] == ["/a.B/C", "/a.B/C", "/a.B/D"]
    assert all(g["content-type"] == "application/grpc" for g in got)
    # The server side: one Headers object answered with another status, then with trailers.
    codec, client = connect()
    answer = Headers([("content-type", "application/grpc")])
    trailers = Headers([("grpc-status", "0")])
    for sid, status in ((1, 200), (3, 200), (5, 404)):
        client.conn.send_headers(sid, grpc_request_headers(), end_stream=True)
        codec.receive_data(client.out())
        drain(codec)
        out = codec.send(ResponseHead("http2", sid, status, status, answer, end_stream=False))
        client.feed(out + codec.send(EndOfMessage(trailers=trailers, stream_id=sid)))
    statuses = [dict(e.headers)[":status"] for e in client.events if isinstance(e, h2.events.ResponseReceived)]
    assert statuses == ["200", "200", "404"]
    ends = [dict(e.headers) for e in client.events if isinstance(e, h2.events.TrailersReceived)]
    assert ends == [{"grpc-status": "0"}] * 3


def test_client_role_turns_an_http1_style_head_into_valid_http2_fields() -> None:
    codec, server = connect(Role.CLIENT)
    head = RequestHead(
        "http1",
        service="web.local",
        method="GET",
        path="/a?b=1",
        headers=Headers([("Host", "web.local:8080"), ("Connection", "keep-alive"), ("TE", "gzip"), ("X-Trace", "t1")]),
    )
    sid = codec.new_stream_id()
    got = server.feed(
        codec.send(
            RequestHead(
                head.protocol,
                request_id=sid,
                service=head.service,
                method=head.method,
                path=head.path,
                headers=head.headers,
            )
        )
    )
    request = next(e for e in got if isinstance(e, h2.events.RequestReceived))
    assert request.headers == [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "web.local:8080"),
        (":path", "/a?b=1"),
        ("x-trace", "t1"),
    ]


def test_client_role_refuses_a_request_without_a_client_stream_id() -> None:
    codec, _server = connect(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="new_stream_id"):
        codec.send(RequestHead("http2", request_id=0))


# -- limits, races, route keys ----------------------------------------------------------------------
def test_a_body_over_max_body_bytes_is_refused_on_its_stream_only() -> None:
    codec = Http2Codec(Role.SERVER, CodecLimits(max_body_bytes=1000))
    peer = Peer()
    peer.feed(codec.data_to_send())
    peer.conn.send_headers(1, grpc_request_headers())
    peer.conn.send_data(1, b"a" * 600)
    peer.conn.send_data(1, b"a" * 600)
    peer.conn.send_headers(3, grpc_request_headers(), end_stream=True)
    codec.receive_data(peer.out())
    events = drain(codec)
    assert [type(e) for e in events] == [RequestHead, BodyChunk, StreamReset, RequestHead]
    assert events[2] == StreamReset(1, 8, "body over 1000 bytes")
    got = peer.feed(codec.data_to_send())
    response = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
    assert (response.stream_id, dict(response.headers)["grpc-status"]) == (1, "8")


def test_an_oversized_header_block_is_refused_with_431() -> None:
    """431 on that stream alone (RFC 9113 10.5.1: the block was decoded, so the connection goes on)."""
    codec = Http2Codec(Role.SERVER, CodecLimits(max_header_bytes=4096))
    peer = Peer()
    peer.feed(codec.data_to_send())
    peer.conn.send_headers(1, [*grpc_request_headers(), ("x-big", "v" * 8000)], end_stream=True)
    codec.receive_data(peer.out())
    assert drain(codec) == []
    got = peer.feed(codec.data_to_send())
    [response] = [e for e in got if isinstance(e, h2.events.ResponseReceived)]
    assert dict(response.headers)[":status"] == "431"
    peer.conn.send_headers(3, grpc_request_headers(), end_stream=True)
    codec.receive_data(peer.out())
    [head] = drain(codec)
    assert isinstance(head, RequestHead) and head.request_id == 3 and head.end_stream


def test_sending_on_a_stream_the_peer_just_reset_is_dropped_quietly() -> None:
    codec, peer = connect()
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=True)
    codec.receive_data(peer.out())
    drain(codec)
    peer.conn.reset_stream(1, error_code=8)
    codec.receive_data(peer.out())
    assert drain(codec) == [StreamReset(1, 8, "CANCEL")]
    codec.send(ResponseHead("http2", request_id=1, end_stream=False))
    codec.send(EndOfMessage(stream_id=1))
    with pytest.raises(LocalProtocolError):
        codec.send(ResponseHead("http2", request_id=7, end_stream=True))  # never opened: a kernel bug


def test_host_routes_match_an_http2_request_through_its_authority() -> None:
    codec, peer = connect()
    fields = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "web.local")]
    peer.conn.send_headers(1, fields, end_stream=True)
    codec.receive_data(peer.out())
    [head] = drain(codec)
    assert isinstance(head, RequestHead)
    assert head.key("host") == "web.local"
    assert head.key("x-missing") is None


def test_frames_arriving_after_the_connection_closed_are_ignored_not_an_error() -> None:
    import h2.config
    import h2.connection

    from sofamesh.core.codec import CodecLimits as _Limits
    from sofamesh.core.codec import Role as _Role
    from sofamesh.core.events import NEED_DATA as _NEED
    from sofamesh.core.events import GoAway as _GoAway
    from sofamesh.plugins.protocols.http2.codec import Http2Codec as _Codec

    client = _Codec(_Role.CLIENT, _Limits())
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    while client.next_event() is not _NEED:
        pass
    server.receive_data(client.data_to_send())
    client.send(_GoAway(reason="bye"))  # our side closes
    server.increment_flow_control_window(1024)  # the peer's WINDOW_UPDATE crosses our GOAWAY
    client.receive_data(server.data_to_send())
    events = []
    while (ev := client.next_event()) is not _NEED:
        events.append(ev)
    assert all(type(e).__name__ != "RemoteProtocolError" for e in events)


def test_partial_and_buffered_say_what_the_codec_holds_undecoded() -> None:
    """Read by the slow-peer sweep (request_headers_timeout_ms) and the overload manager."""
    codec, peer = connect()
    assert not codec.partial() and codec.buffered() == 0
    peer.conn.send_headers(1, grpc_request_headers(), end_stream=True)
    wire = peer.out()
    codec.receive_data(wire[:5])  # half a frame header
    assert drain(codec) == []
    assert codec.partial() and codec.buffered() == 5
    codec.receive_data(wire[5:])
    [head] = drain(codec)
    assert isinstance(head, RequestHead)
    assert not codec.partial() and codec.buffered() == 0


def _lax_peer(client: bool) -> Peer:
    """A peer whose h2 connection sends header blocks RFC 9113 forbids."""
    peer = Peer(client=client)
    peer.conn.config.validate_outbound_headers = False
    peer.conn.config.normalize_outbound_headers = False
    return peer


@pytest.mark.parametrize("stream_error", [False, True])
def test_invalid_request_trailers_end_the_connection_or_only_their_stream(stream_error: bool) -> None:
    codec = Http2Codec(Role.SERVER, CodecLimits(), stream_error_on_invalid_http_message=stream_error)
    peer = _lax_peer(client=True)
    codec.receive_data(peer.out())
    drain(codec)
    peer.feed(codec.data_to_send())
    peer.conn.send_headers(1, grpc_request_headers())
    peer.conn.send_headers(1, [("Upper", "x")], end_stream=True)  # RFC 9113 8.2.1: lower case only
    peer.conn.send_headers(3, grpc_request_headers(), end_stream=True)
    codec.receive_data(peer.out())
    if not stream_error:
        with pytest.raises(RemoteProtocolError, match="illegal header field name"):
            drain(codec)
        got = peer.feed(codec.data_to_send())
        assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 1 for e in got)
        return
    events = drain(codec)
    assert [(type(e), getattr(e, "request_id", getattr(e, "stream_id", None))) for e in events] == [
        (RequestHead, 1), (StreamReset, 1), (RequestHead, 3)]
    assert events[1].error_code == 1 and "illegal header field name" in events[1].reason
    got = peer.feed(codec.data_to_send())
    assert [(e.stream_id, e.error_code) for e in got if isinstance(e, h2.events.StreamReset)] == [(1, 1)]
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in got)


def test_custom_settings_follow_ours_and_a_max_frame_size_among_them_is_enforced() -> None:
    codec = Http2Codec(Role.SERVER, CodecLimits(), custom_settings=((0x5, 32768), (0xABC, 5)))
    peer = Peer(client=True)
    changed = next(e for e in peer.feed(codec.data_to_send()) if isinstance(e, h2.events.RemoteSettingsChanged))
    got = {int(k): v.new_value for k, v in changed.changed_settings.items()}
    assert got[0x5] == 32768 and got[0xABC] == 5 and got[0x3] == 1024
    codec.receive_data(peer.out())  # its preface, SETTINGS and the ACK of ours
    drain(codec)
    peer.feed(codec.data_to_send())
    peer.conn.send_headers(1, grpc_request_headers())
    peer.conn.send_data(1, b"\x00" * 20_000, end_stream=True)  # h2 sends one frame: over the RFC's 16384, within ours
    codec.receive_data(peer.out())
    events = drain(codec)
    assert sum(len(e.data) for e in events if isinstance(e, BodyChunk)) == 20_000
