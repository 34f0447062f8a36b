"""Header blocks the http2 codec checks itself: malformed ones from a real h2 peer (its own checks
turned off so it sends them) end the connection with GOAWAY PROTOCOL_ERROR, as h2's did."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
import pytest

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.errors import RemoteProtocolError
from sofamesh.core.events import EndOfMessage, RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.http2 import Http2Codec
from sofamesh.plugins.protocols.http2.fields import field_block
from sofamesh.plugins.protocols.http2.hpack_codec import Encoder
from tests.unit.plugins.protocols.http2.test_http2_codec import drain

GOOD = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a.B/C"), (b":authority", b"x:1"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")]


def lax_peer(client: bool) -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(client_side=client, header_encoding=None, validate_outbound_headers=False,
                                       normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    return conn


def server_receiving(fields: list[tuple[bytes, bytes]], end_stream: bool = True) -> tuple[Http2Codec, bytes]:
    """A server-role codec fed one request header block; returns it and the peer's bytes so far."""
    codec = Http2Codec(Role.SERVER, CodecLimits())
    peer = lax_peer(client=True)
    peer.receive_data(codec.data_to_send())
    peer.send_headers(1, fields, end_stream=end_stream)
    codec.receive_data(peer.data_to_send())
    return codec, b""


def assert_goaway_protocol_error(codec: Http2Codec, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        drain(codec)
    watcher = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    watcher.initiate_connection()
    got = watcher.receive_data(codec.data_to_send())
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 1 for e in got)


@pytest.mark.parametrize(("fields", "match"), [
    ([*GOOD, (b"X-Upper", b"1")], "illegal header field name"),
    ([*GOOD, (b"bad name", b"1")], "illegal header field name"),
    ([*GOOD, (b"a:b", b"1")], "illegal header field name"),
    ([*GOOD, (b"", b"1")], "illegal header field name"),
    ([*GOOD, (b"x-split", b"a\r\nx-evil: 1")], "illegal character"),
    ([*GOOD, (b"x-nul", b"a\x00b")], "illegal character"),
    ([*GOOD, (b"x-pad", b" a")], "surrounding whitespace"),
    ([*GOOD, (b"x-pad", b"a\t")], "surrounding whitespace"),
    ([(b":path", b"/a\nb"), *GOOD[:2], *GOOD[3:]], "illegal character"),
    ([*GOOD, (b"connection", b"close")], "connection-specific"),
    ([*GOOD, (b"transfer-encoding", b"chunked")], "connection-specific"),
    ([*GOOD[:5], (b"te", b"gzip")], "te header field"),
    ([*GOOD[:2], (b"x-early", b"1"), *GOOD[2:]], "after a regular field"),
    ([*GOOD, (b":method", b"GET")], "duplicate|after a regular"),
    ([(b":method", b"GET"), (b":method", b"POST"), *GOOD[1:]], "duplicate"),
    ([(b":status", b"200"), *GOOD], "not allowed"),
    ([(b":custom", b"1"), *GOOD], "not allowed"),
    (GOOD[1:], "without :method"),
    ([GOOD[0], *GOOD[2:]], "without :scheme or :path"),
    ([*GOOD[:2], (b":path", b""), *GOOD[3:]], "empty :path"),
    ([*GOOD[:3], *GOOD[4:]], "without :authority or host"),
    ([*GOOD, (b"host", b"other:2")], "mismatched :authority and host"),
    ([*GOOD[:3], *GOOD[4:], (b"host", b"x:1"), (b"host", b"x:1")], "more than one host"),
    ([(b":method", b"CONNECT"), (b":authority", b"x:1"), (b":path", b"/")], "CONNECT request with"),
    ([*GOOD[:4], (b":protocol", b"websocket"), *GOOD[4:]], "after a regular|not CONNECT"),
])
def test_a_malformed_request_header_block_is_a_connection_error(fields: list[tuple[bytes, bytes]],
                                                               match: str) -> None:
    codec, _ = server_receiving(fields)
    assert_goaway_protocol_error(codec, match)


def test_a_field_seen_before_is_still_checked_in_its_new_position() -> None:
    codec = Http2Codec(Role.SERVER, CodecLimits())
    peer = lax_peer(client=True)
    peer.receive_data(codec.data_to_send())
    peer.send_headers(1, [*GOOD, (b"x-seen", b"1")], end_stream=True)
    codec.receive_data(peer.data_to_send())
    assert [type(e) for e in drain(codec)] == [RequestHead]
    peer.send_headers(3, [(b"x-seen", b"1"), *GOOD], end_stream=True)  # cached field, now before pseudo
    codec.receive_data(peer.data_to_send())
    assert_goaway_protocol_error(codec, "after a regular field")


def test_well_formed_requests_pass_and_cookie_crumbs_are_joined_at_the_end() -> None:
    fields = [*GOOD[:3], (b":authority", b"x:1"), (b"cookie", b"a=1"), (b"x-k", b"v"), (b"cookie", b"b=2"),
              (b"host", b"x:1"), (b"x-empty", b"")]
    codec, _ = server_receiving(fields)
    (head,) = drain(codec)
    assert isinstance(head, RequestHead)
    assert list(head.headers)[-1] == ("cookie", "a=1; b=2")
    assert head.headers.get_all("cookie") == ["a=1; b=2"]
    assert head.headers.get("x-empty") == ""
    assert head.headers.get("host") == "x:1"
    connect_ok, _ = server_receiving([(b":method", b"CONNECT"), (b":authority", b"x:443")], end_stream=False)
    assert [type(e) for e in drain(connect_ok)] == [RequestHead]


def client_receiving(blocks: list[list[tuple[bytes, bytes]]]) -> Http2Codec:
    codec = Http2Codec(Role.CLIENT, CodecLimits())
    server = lax_peer(client=False)
    server.receive_data(codec.data_to_send())
    codec.receive_data(server.data_to_send())
    drain(codec)
    sid = codec.new_stream_id()
    head = RequestHead("http2", sid, "a.B", "C", "/a.B/C", headers=Headers([("content-type", "application/grpc")]),
                       end_stream=True)
    server.receive_data(codec.send(head))
    for i, block in enumerate(blocks):
        server.send_headers(sid, block, end_stream=i == len(blocks) - 1)
    codec.receive_data(server.data_to_send())
    return codec


def test_upstream_responses_and_trailers_are_checked_too() -> None:
    ok = client_receiving([[(b":status", b"200"), (b"content-type", b"application/grpc")], [(b"grpc-status", b"0")]])
    assert [type(e) for e in drain(ok)] == [ResponseHead, EndOfMessage]
    assert_goaway_protocol_error(client_receiving([[(b"content-type", b"application/grpc")]]), "without :status")
    assert_goaway_protocol_error(client_receiving([[(b":status", b"200"), (b":path", b"/")]]), "not allowed")
    assert_goaway_protocol_error(client_receiving([[(b":status", b"200")], [(b":status", b"200")]]), "not allowed")
    assert_goaway_protocol_error(
        client_receiving([[(b":status", b"200")], [(b"grpc-message", b"bad\r\nx: 1")]]), "illegal character")


def test_sent_fields_are_lower_case_trimmed_and_keep_credentials_out_of_hpack_tables() -> None:
    headers = Headers([(":path", "/stale"), ("Host", "h"), ("Connection", "close"), ("TE", "gzip"),
                       ("X-Pad", " v \t"), ("Authorization", "Bearer t"), ("cookie", "short=1"),
                       ("cookie", "a-much-longer-cookie=value")])
    block = field_block(headers, [(b":status", b"200")])
    assert [tuple(f) for f in block] == [(b":status", b"200"), (b"x-pad", b"v"), (b"authorization", b"Bearer t"),
                                         (b"cookie", b"short=1"), (b"cookie", b"a-much-longer-cookie=value")]
    # The project's encoder sends credentials never indexed (RFC 7541 7.1.3), as the hpack package reads them.
    decoded = hpack.Decoder().decode(Encoder().encode(block), raw=True)
    never = [f[0] for f in decoded if isinstance(f, hpack.NeverIndexedHeaderTuple)]
    assert never == [b"authorization", b"cookie"]


def test_a_pseudo_header_field_seen_before_is_still_checked_for_its_place_and_block() -> None:
    from sofamesh.plugins.protocols.http2.fields import REQUEST, RESPONSE, MalformedFields, received_fields

    assert received_fields(GOOD, REQUEST)[:3] == [(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C")]
    assert received_fields(GOOD, REQUEST) == received_fields(list(GOOD), REQUEST)  # the values are known now
    with pytest.raises(MalformedFields, match="after a regular field"):
        received_fields([*GOOD[:2], (b"te", b"trailers"), *GOOD[2:4]], REQUEST)
    with pytest.raises(MalformedFields, match="duplicate"):
        received_fields([*GOOD[:4], (b":path", b"/a.B/C")], REQUEST)
    with pytest.raises(MalformedFields, match="not allowed"):
        received_fields([(b":status", b"200"), (b":path", b"/a.B/C")], RESPONSE)
    with pytest.raises(MalformedFields, match="illegal character"):
        received_fields([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a.B/C "), (b":authority", b"x:1")],
                        REQUEST)


def test_a_block_seen_before_is_judged_again_for_another_kind_and_handed_out_as_a_new_list() -> None:
    from sofamesh.plugins.protocols.http2.fields import REQUEST, TRAILERS, MalformedFields, received_fields

    first = received_fields(GOOD, REQUEST)
    again = received_fields(list(GOOD), REQUEST)
    assert again == first and again is not first
    again.append(("x-added", "by the caller"))
    assert received_fields(GOOD, REQUEST) == first
    with pytest.raises(MalformedFields, match="not allowed"):
        received_fields(GOOD, TRAILERS)
    regular = [(b"content-type", b"application/grpc")]
    assert received_fields(regular, TRAILERS) == [("content-type", "application/grpc")]
    with pytest.raises(MalformedFields, match="without :method"):
        received_fields(regular, REQUEST)



def _requests_sent(heads: list[RequestHead]) -> list[list[tuple[bytes, bytes]]]:
    """What a client-role codec puts on the wire for each head, read back by a real h2 server."""
    codec = Http2Codec(Role.CLIENT, CodecLimits())
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    peer.initiate_connection()
    peer.receive_data(codec.data_to_send())
    sent = []
    for head in heads:
        got = peer.receive_data(codec.send(head))
        sent.append([tuple(f) for e in got if isinstance(e, h2.events.RequestReceived) for f in e.headers])
    return sent


def test_a_sent_block_kept_whole_is_the_block_its_head_builds_and_changes_with_any_input() -> None:
    from sofamesh.plugins.protocols.http2 import fields

    fields._SENT_BLOCKS.clear()
    grpc = Headers([(":method", "POST"), (":path", "/a.B/C"), (":scheme", "http"), (":authority", "x:1"),
                    ("content-type", "application/grpc"), ("te", "trailers"), ("x-forwarded-for", "10.0.0.1")])
    sent = _requests_sent([
        RequestHead("http2", 1, "a.B", "C", "/a.B/C", headers=grpc, end_stream=False),
        RequestHead("http2", 3, "a.B", "C", "/a.B/C", headers=grpc, end_stream=False),  # kept
        RequestHead("http2", 5, "a.B", "C", "/a.B/C", headers=Headers([*grpc, ("x-b3", "1")]), end_stream=False),
        RequestHead("http2", 7, "svc:80", "GET", "/x", headers=Headers([("Host", "h:1")])),  # pseudo from the head
        RequestHead("http2", 9, "svc:80", "PUT", "/y", headers=Headers([("Host", "h:1")])),  # another method, path
        RequestHead("http2", 11, "svc:80", "PUT", "/y", headers=Headers([("Host", "h:2")])),  # another host
    ])
    expect = [(b":method", b"POST"), (b":path", b"/a.B/C"), (b":scheme", b"http"), (b":authority", b"x:1"),
              (b"content-type", b"application/grpc"), (b"te", b"trailers"), (b"x-forwarded-for", b"10.0.0.1")]
    assert sent[0] == expect and sent[1] == expect
    assert sent[2] == [*expect, (b"x-b3", b"1")]
    assert sent[3] == [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h:1"), (b":path", b"/x")]
    assert sent[4] == [(b":method", b"PUT"), (b":scheme", b"http"), (b":authority", b"h:1"), (b":path", b"/y")]
    assert sent[5] == [(b":method", b"PUT"), (b":scheme", b"http"), (b":authority", b"h:2"), (b":path", b"/y")]
    assert len(fields._SENT_BLOCKS) == 5


def test_a_request_block_with_credentials_is_sent_never_indexed_and_never_kept() -> None:
    from sofamesh.plugins.protocols.http2 import fields

    fields._SENT_BLOCKS.clear()
    for name, value in [("authorization", "Bearer t"), ("proxy-authorization", "Basic x"), ("cookie", "a=1")]:
        headers = Headers([("content-type", "application/grpc"), (name, value)])
        heads = [RequestHead("http2", sid, "a.B", "POST", "/a.B/C", headers=headers) for sid in (1, 3)]
        codec = Http2Codec(Role.CLIENT, CodecLimits())
        codec.data_to_send()
        decoder = hpack.Decoder()
        for head in heads:
            out = codec.send(head)
            decoded = decoder.decode(out[9 : 9 + int.from_bytes(out[:3], "big")], raw=True)
            assert [f for f in decoded if isinstance(f, hpack.NeverIndexedHeaderTuple)] == [
                (name.encode(), value.encode())]
    assert not fields._SENT_BLOCKS


def test_a_header_that_is_not_a_pair_tuple_never_has_its_block_kept() -> None:
    from sofamesh.plugins.protocols.http2 import fields

    fields._SENT_BLOCKS.clear()
    headers = Headers([["content-type", "application/grpc"]])  # type: ignore[list-item]
    head = RequestHead("http2", 1, "a.B", "POST", "/a.B/C", headers=headers)
    if fields.__file__.endswith(".so"):  # the compiled build takes (name, value) tuples only, as it always did
        with pytest.raises(TypeError, match="tuple"):
            _requests_sent([head])
    else:
        assert _requests_sent([head])[0][-1] == (b"content-type", b"application/grpc")
    assert not fields._SENT_BLOCKS


def test_heads_that_never_repeat_stop_being_kept_and_repeating_ones_are_kept_again_later() -> None:
    # A trace id per request makes every head new: keeping their blocks would only cost. After
    # _GIVE_UP blocks kept and never asked for again, the next _SKIP heads go unkeyed; then keeping resumes.
    from sofamesh.plugins.protocols.http2 import fields

    fields._SENT_BLOCKS.clear()
    fields._unasked = fields._skipping = 0
    prefix = ("POST", "a.B", "/a.B/C")
    for i in range(fields._GIVE_UP):
        key = fields.block_key(prefix, Headers([("traceparent", f"00-{i:032x}-{i:016x}-01")]))
        assert key is not None and fields.known_block(key) is None
        fields.keep_block(key, [(b"traceparent", f"00-{i:032x}-{i:016x}-01".encode())])
    assert not fields._SENT_BLOCKS
    same = Headers([("content-type", "application/grpc")])
    assert all(fields.block_key(prefix, same) is None for _ in range(fields._SKIP))
    key = fields.block_key(prefix, same)
    assert key is not None and fields.known_block(key) is None
    fields.keep_block(key, [(b"content-type", b"application/grpc")])
    for _ in range(2 * fields._GIVE_UP):  # found again each time: keeping never stops
        again = fields.block_key(prefix, same)
        assert again is not None and fields.known_block(again) == [(b"content-type", b"application/grpc")]
    fields._SENT_BLOCKS.clear()
