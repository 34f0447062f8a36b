"""The hessian2 reader against an independent encoder (npm hessian.js) and real peer bytes."""

from __future__ import annotations

import string
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sofamesh.core.hessian import HessianError, HessianReader, encode_string
from tests.unit.core.hessian.hessian_js import HessianJs, require_hessian_js


@pytest.fixture(scope="module")
def hessian_js() -> Iterator[HessianJs]:
    enc = HessianJs(require_hessian_js())
    yield enc
    enc.close()


# Text without lone surrogates (JSON cannot carry them), with plenty of non-ASCII and astral chars.
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80) | st.sampled_from(
    ["", "a" * 31, "a" * 32, "é" * 1023, "😀" * 600, "x" * 40000, "€" * 33000, "a" + "😀" * 20000]
)
names = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8)

scalars = st.one_of(
    texts,
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1).map(lambda n: {"$class": "int", "$": n}),
    st.integers(-(2**53), 2**53).map(lambda n: {"$class": "long", "$": n}),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: {"$class": "double", "$": x}),
    st.integers(0, 2**41).map(lambda ms: {"$date": ms}),
    st.binary(max_size=70000).map(lambda b: {"$bytes": b.hex()}),
)


def _object(fields: dict[str, object]) -> dict[str, object]:
    # One class name per field set, so hessian.js's class-definition cache stays consistent.
    return {"$class": "com.example.T_" + "_".join(sorted(fields)), "$": fields}


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=12),
        st.lists(inner, max_size=12).map(lambda xs: {"$class": "java.util.ArrayList", "$": xs}),
        st.dictionaries(names, inner, max_size=6).map(lambda m: {"$class": "java.util.HashMap", "$": m}),
        st.dictionaries(names, inner, min_size=1, max_size=5).map(_object),
        st.tuples(inner, st.integers(2, 4)).map(lambda t: {"$same": t[0], "n": t[1]}),
    ),
    max_leaves=30,
)

attachments = st.dictionaries(names, texts.filter(lambda s: len(s) < 100), max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=st.lists(texts, min_size=4, max_size=4), args=st.lists(values, max_size=5), att=attachments)
def test_reader_reads_strings_skips_every_value_and_reads_the_trailing_map(
    hessian_js: HessianJs, head: list[str], args: list[object], att: dict[str, str]
) -> None:
    stream, ends = hessian_js.encode([*head, *args, {"$class": "java.util.HashMap", "$": att}])
    r = HessianReader(stream)
    for i, text in enumerate(head):
        assert r.read_string() == text
        assert r.pos == ends[i]
    for i in range(len(args)):
        r.skip()
        assert r.pos == ends[4 + i]
    assert r.read_string_map() == att
    assert r.at_end()


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_our_string_encoding_matches_hessian_js_byte_for_byte(hessian_js: HessianJs, text: str) -> None:
    stream, _ = hessian_js.encode([text])
    assert encode_string(text) == stream


@settings(max_examples=300, deadline=None)
@given(value=values, cut=st.integers(min_value=0))
def test_a_truncated_value_raises_hessian_error_only(hessian_js: HessianJs, value: object, cut: int) -> None:
    stream, _ = hessian_js.encode([value])
    short = stream[: cut % len(stream)]
    with pytest.raises(HessianError):
        HessianReader(short).skip()


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_hessian_error(data: bytes) -> None:
    r = HessianReader(data)
    try:
        while not r.at_end():
            r.skip()
    except HessianError:
        pass
    for read in (HessianReader.read_string, HessianReader.read_string_map, HessianReader.read_int):
        try:
            read(HessianReader(data))
        except HessianError:
            pass


def test_string_lengths_count_utf16_units_and_surrogates_join_into_one_character() -> None:
    # "😀" = U+1F600 = surrogates D83D DE00, each written as 3 bytes; the length byte says 2.
    r = HessianReader(bytes.fromhex("02eda0bdedb880") + b"\x01a")
    assert r.read_string() == "😀"
    assert r.read_string() == "a"


def test_a_four_byte_utf8_character_counts_as_two_units() -> None:
    r = HessianReader(b"\x03" + "😀x".encode())
    assert r.read_string() == "😀x"


def test_chunked_strings_join_r_chunks_and_final_compact_chunk() -> None:
    data = b"R\x00\x03abc" + b"R\x00\x01d" + b"\x02ef"
    assert HessianReader(data).read_string() == "abcdef"


def test_hessian1_lowercase_s_chunk_is_accepted_only_after_a_first_chunk() -> None:
    assert HessianReader(b"R\x00\x01as\x00\x01bS\x00\x01c").read_string() == "abc"
    with pytest.raises(HessianError, match="string expected"):
        HessianReader(b"s\x00\x01a").read_string()


def test_medium_string_uses_the_low_bits_of_the_tag() -> None:
    text = "z" * 700
    data = bytes((0x30 + (700 >> 8), 700 & 0xFF)) + text.encode()
    assert HessianReader(data).read_string() == text


def test_object_instance_of_an_undefined_class_is_rejected_with_its_offset() -> None:
    with pytest.raises(HessianError, match="class definition 0"):
        HessianReader(b"\x60\x91").skip()


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    with pytest.raises(HessianError, match="nested deeper"):
        HessianReader(b"\x79" * 100 + b"N").skip()


def test_peer_captured_argument_with_class_definition_and_attachments_is_skipped() -> None:
    # dubbo2.js 2.3.9 argument: java.combine("com.sofamesh.demo.Person", {name: "bob", n: 3}),
    # then its attachments map, as captured on the wire.
    data = bytes.fromhex(
        "4318636f6d2e736f66616d6573682e64656d6f2e506572736f6e92046e616d65016e6003626f6293"
        "480b6170706c69636174696f6e09647562626f322e6a730567726f757002673109696e7465726661"
        "63651d636f6d2e736f66616d6573682e64656d6f2e4563686f5365727669636504706174681d636f"
        "6d2e736f66616d6573682e64656d6f2e4563686f536572766963650776657273696f6e05312e302e305a"
    )
    r = HessianReader(data)
    r.skip()
    assert r.read_string_map() == {
        "application": "dubbo2.js",
        "group": "g1",
        "interface": "com.sofamesh.demo.EchoService",
        "path": "com.sofamesh.demo.EchoService",
        "version": "1.0.0",
    }
    assert r.at_end()


def test_every_scalar_form_of_the_grammar_is_skipped() -> None:
    forms = [
        b"\x90",
        b"\xc8\x01",
        b"\xd4\x00\x01",
        b"I\x00\x00\x00\x01",  # ints
        b"\xe0",
        b"\xf8\x01",
        b"\x3c\x00\x01",
        b"Y\x00\x00\x00\x01",
        b"L" + bytes(8),  # longs
        b"\x5b",
        b"\x5c",
        b"\x5d\x01",
        b"\x5e\x00\x01",
        b"\x5f" + bytes(4),
        b"D" + bytes(8),  # doubles
        b"J" + bytes(8),
        b"K" + bytes(4),
        b"T",
        b"F",
        b"N",  # dates, booleans, null
        b"\x22ab",
        b"\x34\x02" + b"x" * 2,
        b"A\x00\x01xB\x00\x01y",
        b"A\x00\x01x\x21y",  # binary
        b"Q\x90",
        b"M\x03FooN\x90Z",
        b"H\x01aNZ",
        b"U\x03Foo\x90Z",
        b"V\x03Foo\x92\x90\x90",
        b"W\x90Z",
        b"X\x91\x90",
        b"\x71\x03Foo\x90",
        b"\x79\x90",  # refs, maps, lists
        b"C\x03Foo\x91\x01a\x60\x90",
        b"C\x03Foo\x90O\x90",  # objects
    ]
    for form in forms:
        r = HessianReader(form + b"\x01z")
        r.skip()
        assert r.read_string() == "z", form.hex()
