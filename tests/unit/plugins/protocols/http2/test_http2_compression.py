"""The codec's HPACK encoder and decoder against hpack's own, over many blocks on one connection
(the dynamic tables must stay in step), and on malformed blocks."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
import hpack
import pytest
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hypothesis import given, settings
from hypothesis import strategies as st

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.plugins.protocols.http2.codec import Http2Codec
from sofamesh.plugins.protocols.http2.compression import Decoder, Encoder
from sofamesh.plugins.protocols.http2.connection import LEAN_RECEIVE, LEAN_SEND, Connection

NAMES = [b":status", b":path", b"content-type", b"grpc-status", b"x-a", b"x-b", b"authorization", b"cookie"]
values = st.binary(max_size=40) | st.sampled_from([b"200", b"404", b"application/grpc", b"0", b"/a.B/C", b""])
fields = st.tuples(st.sampled_from(NAMES) | st.binary(min_size=1, max_size=12), values, st.booleans())
blocks = st.lists(st.lists(fields, max_size=12), min_size=1, max_size=25)


def as_sent(block: list[tuple[bytes, bytes, bool]]) -> list[tuple[bytes, bytes]]:
    return [hpack.NeverIndexedHeaderTuple(n, v) if never else (n, v) for n, v, never in block]


@settings(max_examples=150, deadline=None)
@given(blocks, st.sampled_from([4096, 256, 64, 0]))
def test_blocks_we_encode_decode_with_hpack_in_order_with_any_table_size(
        seq: list[list[tuple[bytes, bytes, bool]]], table_size: int) -> None:
    ours, theirs = Encoder(), hpack.Decoder()
    ours.header_table_size = table_size
    for block in seq:
        got = theirs.decode(ours.encode(as_sent(block)), raw=True)
        assert [(n, v) for n, v in got] == [(n, v) for n, v, _ in block]
    assert list(ours.header_table.dynamic_entries) == list(theirs.header_table.dynamic_entries)


@settings(max_examples=150, deadline=None)
@given(blocks, st.sampled_from([4096, 256, 64, 0]))
def test_blocks_hpack_encodes_decode_with_ours_in_order_with_any_table_size(
        seq: list[list[tuple[bytes, bytes, bool]]], table_size: int) -> None:
    theirs, ours = hpack.Encoder(), Decoder()
    theirs.header_table_size = table_size
    for block in seq:
        got = ours.decode(theirs.encode(as_sent(block)), raw=True)
        assert got == [(n, v) for n, v, _ in block]
    assert list(ours.header_table.dynamic_entries) == list(theirs.header_table.dynamic_entries)


def test_a_field_sent_twice_is_one_indexed_byte_the_second_time_and_never_indexed_ones_stay_out() -> None:
    enc = Encoder()
    enc.encode([(b"x-trace", b"abc")])
    assert enc.encode([(b"x-trace", b"abc")]) == bytes([0x80 | 62])
    enc.encode([hpack.NeverIndexedHeaderTuple(b"authorization", b"secret")])
    assert (b"authorization", b"secret") not in enc.header_table.dynamic_entries
    assert enc.encode([(b":status", b"200")]) == b"\x88"


@pytest.mark.parametrize("block", [
    b"\x80",  # index 0
    b"\xff\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # endless integer
    b"\xbf",  # index 63: past an empty dynamic table
    b"\x40\x05ab",  # name shorter than its length
    b"\x00\x01a\x05b",  # value shorter than its length
    b"\x82\x20",  # table size update after a field
    b"\x3f\xe1\x7f",  # table size update above the allowed maximum
    b"\x40",  # literal with no name
    b"\x41\x83\xff\xff\xff",  # bad Huffman padding
])
def test_malformed_blocks_raise_hpack_decoding_errors_like_hpack(block: bytes) -> None:
    with pytest.raises(HPACKDecodingError):
        hpack.Decoder().decode(block, raw=True)
    with pytest.raises(HPACKDecodingError):
        Decoder().decode(block, raw=True)


def test_a_block_over_the_header_list_limit_is_refused() -> None:
    dec = Decoder()
    dec.max_header_list_size = 100
    block = hpack.Encoder().encode([(b"x-a", b"v" * 40), (b"x-b", b"v" * 40)])
    with pytest.raises(OversizedHeaderListError):
        dec.decode(block, raw=True)


def test_the_installed_h2_keeps_the_lean_receive_path_and_the_codec_uses_our_hpack() -> None:
    assert LEAN_RECEIVE, "h2's _receive_frame changed shape: review connection.py against it"
    conn = Http2Codec(Role.SERVER, CodecLimits())._conn
    assert isinstance(conn, Connection)
    assert isinstance(conn.encoder, Encoder) and isinstance(conn.decoder, Decoder)
    assert conn.decoder.max_header_list_size == CodecLimits().max_header_bytes


def test_a_block_handed_over_as_a_buffer_decodes_to_bytes() -> None:
    block = hpack.Encoder().encode([(b"x-a", b"1"), (b"x-b", b"two")], huffman=False)
    assert Decoder().decode(memoryview(block), raw=True) == [(b"x-a", b"1"), (b"x-b", b"two")]  # type: ignore[arg-type]
    assert all(type(v) is bytes for f in Decoder().decode(memoryview(block), raw=True) for v in f)  # type: ignore[arg-type]


Step = tuple[str, tuple[object, ...], dict[str, object]]


def same_as_h2(lean: Connection, stock: Connection, peer: h2.connection.H2Connection, steps: list[Step]) -> None:
    """Run each step through the short path on ``lean`` and h2's own on ``stock``: same bytes, and
    the peer accepts them."""
    for name, args, kw in steps:
        getattr(lean, name)(*args, **kw)
        getattr(h2.connection.H2Connection, name)(stock, *args, **kw)
        out = lean.data_to_send()
        assert out == stock.data_to_send(), name
        peer.receive_data(out)
    for sid, stream in stock.streams.items():
        assert lean.streams[sid].state_machine.state == stream.state_machine.state
        assert lean.streams[sid].outbound_flow_control_window == stream.outbound_flow_control_window
        assert lean.streams[sid].request_method == stream.request_method
        assert lean.streams[sid]._authority == stream._authority
    assert lean.outbound_flow_control_window == stock.outbound_flow_control_window


def lean_and_stock(client: bool) -> tuple[Connection, Connection]:
    def one() -> Connection:
        conn = Connection(h2.config.H2Configuration(client_side=client, header_encoding=None,
                                                    validate_outbound_headers=False, normalize_outbound_headers=False))
        conn.initiate_connection()
        return conn
    return one(), one()


REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a.B/C"), (b":authority", b"x")]


def test_the_short_send_paths_write_what_h2_writes_and_leave_the_same_state() -> None:
    assert LEAN_SEND, "h2's send_headers/send_data changed shape: review connection.py against them"
    lean, stock = lean_and_stock(client=False)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    for sid in (1, 3):
        client.send_headers(sid, REQUEST)
    hello = client.data_to_send()
    for conn in (lean, stock):
        conn.receive_data(hello)
        conn.data_to_send()
    same_as_h2(lean, stock, client, [
        ("send_headers", (1, [(b":status", b"200"), (b"x-big", b"v" * 40_000)]), {}),  # HEADERS + CONTINUATIONs
        ("send_data", (1, b"abc"), {}),
        ("send_data", (1, memoryview(b"xyz")), {}),
        ("send_headers", (1, [(b"grpc-status", b"0"), hpack.NeverIndexedHeaderTuple(b"authorization", b"t")]),
         {"end_stream": True}),
        ("send_headers", (3, [(b":status", b"100")]), {}),  # 1xx: h2's own path
        ("send_headers", (3, [(b":status", b"204")]), {"end_stream": True}),
    ])
    with pytest.raises(h2.exceptions.ProtocolError, match="SEND_DATA in state"):
        lean.send_data(1, b"late")
    with pytest.raises(h2.exceptions.ProtocolError, match="SEND_DATA in state"):
        h2.connection.H2Connection.send_data(stock, 1, b"late")


def test_the_short_send_paths_open_request_streams_as_h2_does() -> None:
    lean, stock = lean_and_stock(client=True)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    server.initiate_connection()
    hello = server.data_to_send()
    for conn in (lean, stock):
        conn.receive_data(hello)
    preface = lean.data_to_send()
    assert preface == stock.data_to_send()
    server.receive_data(preface)
    server.data_to_send()
    same_as_h2(lean, stock, server, [
        ("send_headers", (1, [*REQUEST, (b"te", b"trailers")]), {}),
        ("send_data", (1, b"hello"), {}),
        ("send_headers", (1, [(b"x-trailer", b"1")]), {"end_stream": True}),
        ("send_headers", (3, [(b":method", b"HEAD"), *REQUEST[1:]]), {"end_stream": True}),
    ])
    for conn in (lean, stock):
        with pytest.raises(h2.exceptions.TooManyStreamsError):
            h2.connection.H2Connection.send_headers(conn, 5, REQUEST) if conn is stock else conn.send_headers(5, REQUEST)


def test_a_huffman_literal_sent_on_every_block_decodes_the_same_each_time() -> None:
    enc, dec = hpack.Encoder(), Decoder()
    field = hpack.NeverIndexedHeaderTuple(b":path", b"/sofamesh.test.Echo/Unary")  # a literal on every block
    blocks = [enc.encode([field, (b"x-n", str(i).encode())]) for i in range(3)]
    assert all(b[0] == 0x14 and b[1] & 0x80 for b in blocks)  # never indexed, name :path, value Huffman-coded
    for i, block in enumerate(blocks):
        assert dec.decode(block, raw=True) == [(b":path", b"/sofamesh.test.Echo/Unary"), (b"x-n", str(i).encode())]
