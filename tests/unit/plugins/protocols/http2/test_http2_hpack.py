"""The project's own HPACK (``hpack_codec``, ``huffman``): RFC 7541 Appendix C both ways, Huffman
edge cases, malformed blocks, and the dynamic tables kept in step with the ``hpack`` package."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sofamesh.plugins.protocols.http2 import huffman
from sofamesh.plugins.protocols.http2.hpack_codec import Decoder, Encoder, HpackError


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 7541 C.2: one field per block, each representation.
C2 = [
    (
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        [(b"custom-key", b"custom-header")],
        [(b"custom-key", b"custom-header")],
        55,
    ),
    ("040c 2f73 616d 706c 652f 7061 7468", [(b":path", b"/sample/path")], [], 0),
    ("1008 7061 7373 776f 7264 0673 6563 7265 74", [(b"password", b"secret")], [], 0),
    ("82", [(b":method", b"GET")], [], 0),
]

REQ1 = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")]
REQ2 = [*REQ1, (b"cache-control", b"no-cache")]
REQ3 = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/index.html"),
    (b":authority", b"www.example.com"),
    (b"custom-key", b"custom-value"),
]
REQ_TABLES = [
    ([(b":authority", b"www.example.com")], 57),
    ([(b"cache-control", b"no-cache"), (b":authority", b"www.example.com")], 110),
    ([(b"custom-key", b"custom-value"), (b"cache-control", b"no-cache"), (b":authority", b"www.example.com")], 164),
]
# C.3 (no Huffman) and C.4 (Huffman): three requests on one connection.
C3 = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4 = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

LOC = (b"location", b"https://www.example.com")
RESP1 = [(b":status", b"302"), (b"cache-control", b"private"), (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"), LOC]
RESP2 = [(b":status", b"307"), (b"cache-control", b"private"), (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"), LOC]
RESP3 = [
    (b":status", b"200"),
    (b"cache-control", b"private"),
    (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT"),
    LOC,
    (b"content-encoding", b"gzip"),
    (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
]
RESP_TABLES = [
    ([LOC, (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"), (b"cache-control", b"private"), (b":status", b"302")], 222),
    ([(b":status", b"307"), LOC, (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"), (b"cache-control", b"private")], 222),
    ([RESP3[5], (b"content-encoding", b"gzip"), (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT")], 215),
]
# C.5 (no Huffman) and C.6 (Huffman): three responses, dynamic table of 256 bytes (evictions).
C5 = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32"
    "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970"
    "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61"
    "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
]
C6 = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad"
    "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2"
    "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


@pytest.mark.parametrize(("wire", "fields", "table", "size"), C2)
def test_rfc7541_c2_single_representations_decode_with_their_table_effect(
    wire: str, fields: list[tuple[bytes, bytes]], table: list[tuple[bytes, bytes]], size: int
) -> None:
    dec = Decoder()
    assert dec.decode(h(wire)) == (fields, sum(len(n) + len(v) + 32 for n, v in fields))
    assert dec.table == table
    assert dec.table_size == size


def test_rfc7541_c2_1_literal_with_indexing_encodes_as_the_rfc_shows() -> None:
    enc = Encoder(huffman=False, not_indexed=frozenset())
    assert enc.encode([(b"custom-key", b"custom-header")]) == h(C2[0][0])
    assert enc.encode([(b":method", b"GET")]) == h("82")


@pytest.mark.parametrize(
    ("blocks", "messages", "tables", "table_size", "use_huffman"),
    [
        (C3, [REQ1, REQ2, REQ3], REQ_TABLES, 4096, False),
        (C4, [REQ1, REQ2, REQ3], REQ_TABLES, 4096, True),
        (C5, [RESP1, RESP2, RESP3], RESP_TABLES, 256, False),
        (C6, [RESP1, RESP2, RESP3], RESP_TABLES, 256, True),
    ],
    ids=["C.3", "C.4", "C.5", "C.6"],
)
def test_rfc7541_appendix_c_sequences_decode_and_encode_byte_for_byte(
    blocks: list[str],
    messages: list[list[tuple[bytes, bytes]]],
    tables: list[tuple[list[tuple[bytes, bytes]], int]],
    table_size: int,
    use_huffman: bool,
) -> None:
    dec = Decoder(max_allowed_size=table_size)
    enc = Encoder(table_size, huffman=use_huffman, not_indexed=frozenset())
    for wire, message, (table, size) in zip(blocks, messages, tables, strict=True):
        fields, _ = dec.decode(h(wire))
        assert fields == message
        assert (dec.table, dec.table_size) == (table, size)
        assert enc.encode(message) == h(wire)
        assert (enc.table, enc.table_size) == (table, size)


def test_huffman_codes_of_appendix_b_round_trip_every_octet() -> None:
    data = bytes(range(256)) * 3
    assert huffman.decode(huffman.encode(data)) == data
    assert len(huffman.encode(data)) == huffman.encoded_length(data)
    assert huffman.encode(b"") == b""
    assert huffman.encode(b"no-cache") == h("a8eb 1064 9cbf")  # C.4.2


@pytest.mark.parametrize(
    ("coded", "why"),
    [
        (h("ff"), "padding"),  # 8 bits of padding
        (h("a8eb 1064 9cbf ff"), "padding"),
        (h("fe"), "padding"),  # 7 bits that are not all ones (a prefix of a longer code)
        (h("ffff ffff"), "EOS"),
    ],  # 30 ones: EOS itself
)
def test_malformed_huffman_strings_are_decoding_errors(coded: bytes, why: str) -> None:
    with pytest.raises(huffman.HuffmanError, match=why):
        huffman.decode(coded)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("80", "index 0"),
        ("be", "beyond the dynamic table"),
        ("ff80808080808080", "integer"),
        ("ff", "ends inside an integer"),
        ("4005 6162", "runs past"),
        ("82 20", "size update after"),
        ("3fe21f", "above the 4096 allowed"),
        ("4081 ff01 61", "padding"),
    ],
)
def test_malformed_header_blocks_are_hpack_errors_naming_the_fault(wire: str, message: str) -> None:
    with pytest.raises(HpackError, match=message):
        Decoder().decode(h(wire))


def test_a_block_past_the_header_list_limit_is_decoded_whole_and_keeps_the_table_in_step() -> None:
    enc, dec = Encoder(), Decoder(max_header_list_size=100)
    block = [(b"x-a", b"1" * 40), (b"x-b", b"2" * 40), (b"x-c", b"3")]
    fields, size = dec.decode(enc.encode(block))
    assert size == sum(len(n) + len(v) + 32 for n, v in block) and size > 100
    assert fields == block[:1]
    assert dec.table == enc.table  # every indexed literal was added, even those not returned
    assert dec.decode(enc.encode([(b"x-c", b"3")]))[0] == [(b"x-c", b"3")]


def test_credentials_are_never_indexed_and_per_message_values_are_not_indexed() -> None:
    enc = Encoder()
    block = enc.encode([(b"authorization", b"Bearer abc"), (b"cookie", b"a=1"), (b"content-length", b"12")])
    assert enc.table == []
    out = hpack.Decoder().decode(block, raw=True)
    assert [(f[0], f[1], f.indexable) for f in out] == [
        (b"authorization", b"Bearer abc", False),
        (b"cookie", b"a=1", False),
        (b"content-length", b"12", True),
    ]


def test_a_table_size_change_from_the_peer_is_signalled_at_the_start_of_the_next_block() -> None:
    enc, theirs = Encoder(), hpack.Decoder()
    enc.encode([(b"x-a", b"1")])
    enc.set_max_table_size(0)
    block = enc.encode([(b"x-a", b"1")])
    assert block[:1] == b"\x20"
    assert theirs.decode(block, raw=True) == [(b"x-a", b"1")]
    assert enc.table == []


NAMES = [b":status", b":path", b"content-type", b"grpc-status", b"x-a", b"x-b", b"authorization", b"cookie"]
values = st.binary(max_size=40) | st.sampled_from([b"200", b"404", b"application/grpc", b"0", b"/a.B/C", b""])
fields_st = st.tuples(st.sampled_from(NAMES) | st.binary(min_size=1, max_size=12).map(bytes.lower), values)
blocks_st = st.lists(st.lists(fields_st, max_size=12), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(blocks_st, st.sampled_from([4096, 256, 64, 0]))
def test_blocks_we_encode_decode_with_the_hpack_package_in_order(
    seq: list[list[tuple[bytes, bytes]]], table_size: int
) -> None:
    ours, theirs = Encoder(), hpack.Decoder()
    ours.set_max_table_size(table_size)
    for block in seq:
        assert [(n, v) for n, v in theirs.decode(ours.encode(block), raw=True)] == block
    assert ours.table == list(theirs.header_table.dynamic_entries)


@settings(max_examples=150, deadline=None)
@given(blocks_st, st.sampled_from([4096, 256, 64, 0]))
def test_blocks_the_hpack_package_encodes_decode_with_ours_in_order(
    seq: list[list[tuple[bytes, bytes]]], table_size: int
) -> None:
    theirs, ours = hpack.Encoder(), Decoder()
    theirs.header_table_size = table_size
    for block in seq:
        assert ours.decode(theirs.encode(block))[0] == block
    assert ours.table == list(theirs.header_table.dynamic_entries)


# Blocks kept whole by the encoder and the decoder: what a block means depends on the dynamic table,
# so one kept from before the table changed must never be sent or read again.
GRPC_CALL = [
    (b":method", b"POST"),
    (b":path", b"/pkg.Echo/Unary"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"5S"),
]


def test_a_repeated_block_is_the_same_bytes_and_still_decodes_after_the_table_moved() -> None:
    ours = Encoder()
    peer = hpack.Decoder()
    sent = [ours.encode(GRPC_CALL), ours.encode(GRPC_CALL), ours.encode(GRPC_CALL)]
    assert len(sent[1]) < len(sent[0])  # literals with indexing first, indexes after
    assert sent[2] == sent[1]
    sent.append(ours.encode([(b"x-new", b"1")]))  # one entry more: every dynamic index moves by one
    sent.append(ours.encode(GRPC_CALL))
    assert sent[4] != sent[1]
    assert [peer.decode(b, raw=True) for b in sent] == [GRPC_CALL, GRPC_CALL, GRPC_CALL, [(b"x-new", b"1")], GRPC_CALL]


def test_the_same_tuple_sent_again_is_encoded_against_the_table_as_it_is_now() -> None:
    ours = Encoder()
    peer = hpack.Decoder()
    call = tuple(GRPC_CALL)  # the very same object each time, as the codec sends its blocks sent last
    sent = [ours.encode(call), ours.encode(call), ours.encode(call)]
    assert sent[2] == sent[1] and len(sent[1]) < len(sent[0])
    sent.append(ours.encode([(b"x-new", b"1")]))  # every dynamic index moves by one
    sent.append(ours.encode(call))
    ours.set_max_table_size(0)  # the next block signals the size and holds only literals
    sent.append(ours.encode(call))
    sent.append(ours.encode(call))
    assert sent[4] != sent[1] and sent[5][:1] == b"\x20" and sent[6][:1] != b"\x20"
    assert [peer.decode(b, raw=True) for b in sent] == [GRPC_CALL] * 3 + [[(b"x-new", b"1")]] + [GRPC_CALL] * 3


def test_the_same_bytes_are_decoded_against_the_table_as_it_is_now() -> None:
    ours = Decoder()
    assert ours.decode(h("4003 782d 61 0131"))[0] == [(b"x-a", b"1")]  # literal with indexing: index 62
    assert ours.decode(h("be"))[0] == [(b"x-a", b"1")]
    assert ours.decode(h("be"))[0] == [(b"x-a", b"1")]  # kept, read again
    assert ours.decode(h("4003 782d 62 0132"))[0] == [(b"x-b", b"2")]  # the newest entry is 62 now
    assert ours.decode(h("be"))[0] == [(b"x-b", b"2")]
    assert ours.decode(h("bf"))[0] == [(b"x-a", b"1")]
    assert ours.decode(h("3f e1 1f"))[0] == []  # size update to 4096: still allowed, table kept
    assert ours.decode(h("20"))[0] == []  # size update to 0: the table is emptied
    with pytest.raises(HpackError):
        ours.decode(h("be"))


def test_a_decoded_list_handed_out_is_the_callers_own() -> None:
    ours = Decoder()
    block = Encoder().encode([(b":status", b"200"), (b"content-type", b"application/grpc")])
    fields, _size = ours.decode(block)
    fields.append((b"x-added", b"by the caller"))
    assert ours.decode(block)[0] == [(b":status", b"200"), (b"content-type", b"application/grpc")]


def test_blocks_with_credentials_are_not_kept() -> None:
    secret = [(b":method", b"GET"), (b"authorization", b"Bearer abc"), (b"cookie", b"short=1")]
    enc = Encoder()
    blocks = [enc.encode(secret), enc.encode(secret)]
    assert blocks[0] == blocks[1]  # never indexed: the same literals each time
    assert not enc._blocks
    dec = Decoder()
    assert dec.decode(blocks[0])[0] == dec.decode(blocks[1])[0] == secret
    assert not dec._blocks


def test_a_kept_block_over_a_lowered_header_list_limit_is_decoded_again_and_cut() -> None:
    dec = Decoder()
    block = Encoder().encode(GRPC_CALL)
    fields, size = dec.decode(block)
    assert fields == GRPC_CALL
    dec.max_header_list_size = size - 1
    cut, again = dec.decode(block)
    assert again == size and len(cut) < len(GRPC_CALL)
