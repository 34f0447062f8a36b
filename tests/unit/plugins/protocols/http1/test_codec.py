"""http1 codec: bytes in, events out, at every split offset; framing out; limits; errors."""

from __future__ import annotations

import pytest

from sofamesh.core.codec import CodecLimits, ReplyStatus, Role, Sniff
from sofamesh.core.errors import RemoteProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfMessage,
    RequestHead,
    ResponseHead,
)
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.http1.codec import Http1Codec, Http1CodecFactory

REQUESTS = [
    b"GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Trace: abc\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
    b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"GET http://proxy.example:8080/abs?q HTTP/1.1\r\nHost: ignored\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\r\n",
]


def _drain(codec: Http1Codec) -> list[object]:
    out: list[object] = []
    while (ev := codec.next_event()) is not NEED_DATA:
        out.append(ev)
    return out


def _normalise(events: list[object]) -> list[object]:
    """Merge adjacent body chunks: how bytes are split may change chunking, never content."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, BodyChunk) and out and isinstance(out[-1], BodyChunk):
            out[-1] = BodyChunk(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def _parse(data: bytes, splits: list[int]) -> list[object]:
    codec = Http1Codec(Role.SERVER, CodecLimits())
    events: list[object] = []
    prev = 0
    for cut in [*splits, len(data)]:
        codec.receive_data(data[prev:cut])
        events.extend(_drain(codec))
        prev = cut
    return _normalise(events)


@pytest.mark.parametrize("raw", REQUESTS, ids=["get", "content-length", "chunked", "http10", "absolute-form"])
def test_every_split_offset_gives_the_same_events(raw: bytes) -> None:
    whole = _parse(raw, [])
    assert whole, "no events"
    for i in range(1, len(raw)):
        assert _parse(raw, [i]) == whole, f"split at {i}"
    for i in range(1, len(raw) - 1, 3):
        assert _parse(raw, [i, i + 1]) == whole


def test_pipelined_requests_parse_into_ordered_heads() -> None:
    data = b"".join(REQUESTS[:3])
    events = _parse(data, [])
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.path for h in heads] == ["/a?x=1", "/upload", "/c"]
    assert heads[0].end_stream and not heads[1].end_stream
    assert BodyChunk(b"hello world") in events
    assert events[-1] == EndOfMessage()


def test_request_head_fields_and_hop_by_hop_removal() -> None:
    (head,) = [e for e in _parse(REQUESTS[4], []) if isinstance(e, RequestHead)]
    assert head.service == "proxy.example:8080"
    assert head.path == "/abs?q"
    assert head.method == "GET"
    assert head.headers.get("x-hop") is None and head.headers.get("connection") is None
    assert head.headers.get("host") == "proxy.example:8080"  # the absolute-form authority wins (RFC 9112 3.2.2)


def test_chunked_body_and_trailers_come_out_as_body_events() -> None:
    events = _parse(REQUESTS[2], [])
    assert events[1:] == [BodyChunk(b"hello world"), EndOfMessage()]


def test_malformed_request_raises_remote_protocol_error_with_a_reply_head() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits())
    codec.receive_data(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        _drain(codec)
    assert info.value.status_hint == 400
    assert isinstance(info.value.head, RequestHead)
    reply = codec.local_reply(info.value.head, ReplyStatus.CODEC_ERROR, str(info.value))
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"connection: close" in reply


def test_missing_host_on_http11_is_a_400() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits())
    codec.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="without a Host"):
        _drain(codec)


def test_header_block_limit_gives_431_hint() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits(max_header_bytes=100))
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 200 + b"\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        _drain(codec)
    assert info.value.status_hint == 431


def test_header_count_limit_gives_431_hint() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits(max_headers=3))
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="more than 3 headers"):
        _drain(codec)


def test_body_limit_gives_413_hint() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits(max_body_bytes=4))
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
    with pytest.raises(RemoteProtocolError) as info:
        _drain(codec)
    assert info.value.status_hint == 413


def test_expect_continue_is_answered_by_the_codec_and_stripped() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits())
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    (head,) = _drain(codec)
    assert isinstance(head, RequestHead) and head.headers.get("expect") is None
    assert codec.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert codec.data_to_send() == b""


def _served(request: bytes) -> Http1Codec:
    codec = Http1Codec(Role.SERVER, CodecLimits())
    codec.receive_data(request)
    _drain(codec)
    return codec


def test_response_without_length_is_chunked_for_http11_and_close_delimited_for_http10() -> None:
    c11 = _served(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = ResponseHead(protocol="http1", status=200, headers=Headers([("x-a", "1")]), end_stream=False)
    out = c11.send(head) + c11.send(BodyChunk(b"abc")) + c11.send(EndOfMessage())
    assert out == b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert c11.keep_alive
    c10 = _served(b"GET / HTTP/1.0\r\n\r\n")
    out = c10.send(head) + c10.send(BodyChunk(b"abc")) + c10.send(EndOfMessage())
    assert out == b"HTTP/1.1 200 OK\r\nx-a: 1\r\nconnection: close\r\n\r\nabc"
    assert not c10.keep_alive


def test_send_last_is_the_chunk_then_its_end_and_no_end_is_announced_early() -> None:
    head = ResponseHead(protocol="http1", status=200, end_stream=False)
    apart = _served(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    together = _served(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert apart.send(head) == together.send(head)
    out = together.send_last(BodyChunk(b"abc"))
    assert out == apart.send(BodyChunk(b"abc")) + apart.send(EndOfMessage()) == b"3\r\nabc\r\n0\r\n\r\n"
    c = Http1Codec(Role.SERVER, CodecLimits())
    c.receive_data(REQUESTS[1])
    kinds = []
    while (ev := c.next_event()) is not NEED_DATA:
        kinds.append(type(ev))
        assert not c.end_follows(0), ev  # HTTP/1 hands every chunk on as it comes
    assert kinds == [RequestHead, BodyChunk, EndOfMessage]


def test_connection_close_request_makes_the_codec_close_after_the_response() -> None:
    c = _served(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    out = c.send(ResponseHead(protocol="http1", status=204))
    assert b"connection: close" in out and b"content-length" not in out
    assert not c.keep_alive


def test_client_role_encodes_requests_and_parses_responses_including_head() -> None:
    c = Http1Codec(Role.CLIENT, CodecLimits())
    out = c.send(RequestHead(protocol="http1", service="svc:80", method="HEAD", path="/x"))
    assert out == b"HEAD /x HTTP/1.1\r\nhost: svc:80\r\n\r\n"
    c.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    (head,) = _drain(c)
    assert isinstance(head, ResponseHead) and head.end_stream and head.status == 200
    out = c.send(RequestHead(protocol="http1", service="svc", method="POST", path="/y", end_stream=False))
    assert b"transfer-encoding: chunked" in out
    c.receive_data(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert _drain(c) == [ResponseHead(protocol="http1", status=201, http_status=201,
                                      headers=Headers([("Content-Length", "2")]), end_stream=False),
                         BodyChunk(b"ok"), EndOfMessage()]


def test_client_role_reads_a_close_delimited_body_until_eof() -> None:
    c = Http1Codec(Role.CLIENT, CodecLimits())
    c.send(RequestHead(protocol="http1", service="s", method="GET", path="/"))
    c.receive_data(b"HTTP/1.0 200 OK\r\n\r\npart1")
    c.receive_data(b"part2")
    c.receive_data(b"")
    events = _normalise(_drain(c))
    assert events[1:] == [BodyChunk(b"part1part2"), EndOfMessage(), ConnectionClosed(clean=True)]
    assert not c.keep_alive


def test_local_replies_carry_the_status_and_a_clear_body() -> None:
    c = _served(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = RequestHead(protocol="http1", method="GET", path="/")
    for status in ReplyStatus:
        c2 = _served(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        out = c2.local_reply(head, status, "why it failed")
        assert out.startswith(f"HTTP/1.1 {status.http_status} ".encode())
        assert out.endswith(b"\r\n\r\nwhy it failed\n")
    assert c.keep_alive


def test_sniff_recognises_methods_and_rejects_other_bytes() -> None:
    f = Http1CodecFactory()
    assert f.sniff(b"GET / HT") is Sniff.MATCH
    assert f.sniff(b"PO") is Sniff.NEED_MORE
    assert f.sniff(b"\x01\x01") is Sniff.NO
    assert f.sniff(b"PRI * HT") is Sniff.NO


UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
_WS = CodecLimits(upgrades=frozenset({"websocket"}))


@pytest.mark.parametrize("cut", range(0, len(UPGRADE) + 6, 7))
def test_an_allowed_upgrade_opens_a_tunnel_whose_bytes_are_body_chunks_at_every_split(cut: int) -> None:
    data = UPGRADE + b"\x81\x02hi"  # a WebSocket frame right behind the request
    codec = Http1Codec(Role.SERVER, _WS)
    events: list[object] = []
    for part in [p for p in (data[:cut], data[cut:], b"more") if p] + [b""]:
        codec.receive_data(part)
        events.extend(_drain(codec))
    head, *rest = _normalise(events)
    assert isinstance(head, RequestHead) and not head.end_stream
    assert head.headers.get("upgrade") == "websocket" and head.headers.get("sec-websocket-key")
    assert rest == [BodyChunk(b"\x81\x02himore"), EndOfMessage(), ConnectionClosed(clean=True)]


def test_the_101_goes_out_with_the_upgrade_and_the_tunnel_bytes_raw() -> None:
    codec = Http1Codec(Role.SERVER, _WS)
    codec.receive_data(UPGRADE)
    _drain(codec)
    out = codec.send(ResponseHead(protocol="http1", status=101, http_status=101, end_stream=False,
                                  headers=Headers([("upgrade", "websocket"), ("sec-websocket-accept", "x")])))
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"upgrade: websocket\r\n" in out and b"connection: upgrade\r\n" in out
    assert b"transfer-encoding" not in out and b"content-length" not in out
    assert codec.send(BodyChunk(b"\x81\x02ok")) == b"\x81\x02ok" and not codec.keep_alive


def test_an_upgrade_the_listener_does_not_allow_is_refused_with_403() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits())
    codec.receive_data(UPGRADE)
    with pytest.raises(RemoteProtocolError, match="upgrade 'websocket' is not allowed") as err:
        _drain(codec)
    assert err.value.status_hint == 403


def test_the_client_sends_the_upgrade_and_turns_a_101_into_a_tunnel() -> None:
    server = Http1Codec(Role.SERVER, _WS)
    server.receive_data(UPGRADE)
    head = _drain(server)[0]
    client = Http1Codec(Role.CLIENT, CodecLimits())
    sent = client.send(head)
    assert b"upgrade: websocket\r\n" in sent and b"connection: upgrade\r\n" in sent
    assert b"transfer-encoding" not in sent
    assert client.send(BodyChunk(b"\x81\x02hi")) == b"\x81\x02hi"
    client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02yo")
    client.receive_data(b"")
    events = _normalise(_drain(client))
    assert isinstance(events[0], ResponseHead) and events[0].status == 101 and not events[0].end_stream
    assert events[0].headers.get("upgrade") == "websocket"
    assert events[1:] == [BodyChunk(b"\x81\x02yo"), EndOfMessage(), ConnectionClosed(clean=True)]


def test_an_upgrade_the_upstream_refuses_is_an_ordinary_response() -> None:
    server = Http1Codec(Role.SERVER, _WS)
    server.receive_data(UPGRADE)
    client = Http1Codec(Role.CLIENT, CodecLimits())
    client.send(_drain(server)[0])
    client.receive_data(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno")
    head, body, end = _drain(client)
    assert isinstance(head, ResponseHead) and head.status == 400 and body == BodyChunk(b"no")
    assert isinstance(end, EndOfMessage)


def test_an_h2c_upgrade_is_served_as_the_http11_request_it_also_is() -> None:
    codec = Http1Codec(Role.SERVER, CodecLimits())
    codec.receive_data(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                       b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    first, second = _drain(codec)
    assert isinstance(first, RequestHead) and first.path == "/a" and first.end_stream
    assert first.headers.get("upgrade") is None and codec.keep_alive
    assert isinstance(second, RequestHead) and second.path == "/b"


H2C = (b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
       b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize("cut", range(0, len(H2C) + len(PREFACE), 11))
def test_an_allowed_h2c_upgrade_is_a_tunnel_carrying_its_settings_at_every_split(cut: int) -> None:
    data = H2C + PREFACE
    codec = Http1Codec(Role.SERVER, CodecLimits(upgrades=frozenset({"h2c"})))
    events: list[object] = []
    for part in [p for p in (data[:cut], data[cut:]) if p]:
        codec.receive_data(part)
        events.extend(_drain(codec))
    head, *rest = _normalise(events)
    assert isinstance(head, RequestHead) and not head.end_stream and head.path == "/a"
    assert head.headers.get("upgrade") == "h2c" and head.headers.get("http2-settings") == "AAMAAABkAARAAAAAAAIAAAAA"
    assert rest == [BodyChunk(PREFACE)]
    client = Http1Codec(Role.CLIENT, CodecLimits())
    sent = client.send(head)
    assert b"connection: upgrade, http2-settings\r\n" in sent and b"upgrade: h2c\r\n" in sent
    assert b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n" in sent  # as it came


H2C_POST = H2C.replace(b"GET", b"POST").replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nhi")


@pytest.mark.parametrize("upgrades", [frozenset(), frozenset({"h2c"})])
@pytest.mark.parametrize("cut", range(0, len(H2C_POST) + 20, 9))
def test_an_h2c_upgrade_with_a_body_is_served_as_http11_with_its_body_at_every_split(
    cut: int, upgrades: frozenset[str]
) -> None:
    data = H2C_POST + b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    codec = Http1Codec(Role.SERVER, CodecLimits(upgrades=upgrades))
    events: list[object] = []
    for part in [p for p in (data[:cut], data[cut:]) if p]:
        codec.receive_data(part)
        events.extend(_drain(codec))
    head, *rest, second = _normalise(events)
    assert isinstance(head, RequestHead) and head.headers.get("upgrade") is None and not head.end_stream
    assert rest == [BodyChunk(b"hi"), EndOfMessage()]
    assert isinstance(second, RequestHead) and second.path == "/b" and codec.keep_alive
