"""The codec's HPACK encoder and decoder against hpack's own, over many blocks on one connection
(the dynamic tables must stay in step), and on malformed blocks."""

from __future__ import annotations

import hpack
import pytest
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hypothesis import given, settings
from hypothesis import strategies as st

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.plugins.protocols.http2.codec import Http2Codec
from sofamesh.plugins.protocols.http2.compression import Decoder, Encoder
from sofamesh.plugins.protocols.http2.connection import LEAN_RECEIVE, Connection

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
