"""Dubbo attachments edited in place (``DubboCodec.edit_headers``): the arguments before the map are
skipped, never decoded, and come out byte for byte; only the map and the body length change."""

from __future__ import annotations

import struct

import pytest

from sofamesh.core.codec import CodecLimits, HeaderEdit, Role
from sofamesh.core.events import RequestHead, ResponseHead
from sofamesh.core.hessian import HessianReader
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from sofamesh.plugins.protocols.dubbo.frames import (
    HEADER_LEN,
    count_parameters,
    encode_frame,
    encode_string,
    read_attachments,
    read_body_head,
    supports_response_attachments,
)

from .test_dubbo_codec import REQ_GREET, RES_FAIL, RES_GREET, request_frame

EDIT = HeaderEdit(
    remove=frozenset({"application", "absent"}), set=(("tenant", "t-1"), ("group", "g2")), add=(("note", "grüße 😀"),)
)

# Arguments of several Hessian types: compact int, string, untyped map, double, compact list, long,
# binary, null, date, and an object with its class definition.
MIXED_TYPES = "ILjava/lang/String;Ljava/util/Map;DLjava/util/List;J[BLjava/lang/Object;Ljava/util/Date;Lx/P;"
MIXED_ARGS = (
    b"\x95"
    + encode_string("héllo")
    + b"H\x01k\x91Z"
    + b"D"
    + struct.pack(">d", 1.5)
    + b"\x7a\x01a\x01b"
    + b"\x4c"
    + struct.pack(">q", 1 << 40)
    + b"\x23abc"
    + b"N"
    + b"\x4a"
    + struct.pack(">q", 1_700_000_000_000)
    + b"C\x03x.P\x91\x01n`\x93"
)


def _server() -> DubboCodec:
    return DubboCodec(Role.SERVER, CodecLimits())


def _decoded(frame: bytes) -> RequestHead:
    codec = _server()
    codec.receive_data(frame)
    head = codec.next_event()
    assert isinstance(head, RequestHead)
    return head


def _attachments(frame: bytes) -> dict[str, str]:
    return read_attachments(frame, read_body_head(frame, HEADER_LEN), 100)


def _body_len(frame: bytes) -> int:
    return int.from_bytes(frame[12:16], "big")


@pytest.mark.parametrize(
    ("types", "args"),
    [("", b""), ("Ljava/lang/String;", b"\x02hi"), (MIXED_TYPES, MIXED_ARGS)],
    ids=["no-arguments", "one-string", "ten-of-mixed-types"],
)
def test_request_attachments_are_edited_and_every_argument_kept(types: str, args: bytes) -> None:
    frame = request_frame(types=types, args=args, attachments={"application": "app", "group": "g1", "path": "p"})
    before = _decoded(frame)
    out = _server().edit_headers(frame, EDIT)
    assert _body_len(out) == len(out) - HEADER_LEN and out[:12] == frame[:12]
    assert _attachments(out) == {"group": "g2", "path": "p", "tenant": "t-1", "note": "grüße 😀"}
    head = _decoded(out)
    assert (head.service, head.method, head.version, head.key("group"), head.key("note")) == (
        before.service,
        before.method,
        before.version,
        "g2",
        "grüße 😀",
    )
    assert count_parameters(types) == {"": 0, "Ljava/lang/String;": 1}.get(types, 10)
    for i in range(count_parameters(types)):
        arg = _server().request_argument(before, i)
        assert arg is not None and _server().request_argument(head, i) == arg
    # the arguments' bytes are copied as they are
    start = read_body_head(frame, HEADER_LEN).args_offset
    assert out[start : start + len(args)] == frame[start : start + len(args)] == args


def test_a_real_dubbo2js_request_with_an_object_argument_keeps_its_argument() -> None:
    out = _server().edit_headers(REQ_GREET, HeaderEdit(set=(("x-tenant", "acme"),)))
    head, before = _decoded(out), _decoded(REQ_GREET)
    assert _server().request_argument(head, 0) == _server().request_argument(before, 0)
    assert _attachments(out) == {**_attachments(REQ_GREET), "x-tenant": "acme"}
    assert len(out) == len(REQ_GREET) + len(encode_string("x-tenant") + encode_string("acme"))


def test_a_request_without_an_attachments_map_gets_one() -> None:
    frame = request_frame(attachments=None)
    bare = frame[:-2]  # encode_request writes an empty map "HZ": without it the body ends after the arguments
    bare = bare[:12] + (len(bare) - HEADER_LEN).to_bytes(4, "big") + bare[HEADER_LEN:]
    assert _attachments(bare) == {}
    out = _server().edit_headers(bare, HeaderEdit(add=(("k", "v"),)))
    assert _attachments(out) == {"k": "v"} and _body_len(out) == len(out) - HEADER_LEN


def test_removing_an_absent_key_leaves_the_frame_as_it_is() -> None:
    frame = request_frame(attachments={"a": "1"})
    assert _server().edit_headers(frame, HeaderEdit(remove=frozenset({"b"}))) is frame
    assert _server().edit_headers(frame, HeaderEdit(add=(("a", "other"),))) is frame  # add only when absent


def test_an_attachment_holding_a_map_is_not_dropped_and_the_error_says_why() -> None:
    frame = request_frame(attachments={"a": "1"})
    nested = frame[:-1] + encode_string("m") + b"H\x01k\x91Z" + b"Z"
    nested = nested[:12] + (len(nested) - HEADER_LEN).to_bytes(4, "big") + nested[HEADER_LEN:]
    with pytest.raises(ValueError, match="'m' holds a structured value"):
        _server().edit_headers(nested, HeaderEdit(remove=frozenset({"m"})))
    assert _attachments(_server().edit_headers(nested, HeaderEdit(remove=frozenset({"a"})))) == {}  # m is not text


def _response_values(frame: bytes) -> tuple[int, object, dict[str, str] | None]:
    r = HessianReader(frame, HEADER_LEN)
    flag = r.read_int()
    start = r.pos
    if flag % 3 != 2:
        r.skip()
    value = frame[start : r.pos]
    return flag, value, r.read_string_map() if flag >= 3 else None


def test_a_response_with_attachments_has_its_map_edited() -> None:
    # @dubbo.ts answers with flag 4: value {greeting, n, name} then {dubbo, timestamp}
    out = DubboCodec(Role.CLIENT, CodecLimits()).edit_headers(
        RES_GREET, HeaderEdit(remove=frozenset({"timestamp"}), set=(("served-by", "mesh"),))
    )
    flag, value, att = _response_values(out)
    assert (flag, value, att) == (4, _response_values(RES_GREET)[1], {"dubbo": "2.0.2", "served-by": "mesh"})
    assert _body_len(out) == len(out) - HEADER_LEN


@pytest.mark.parametrize(("flag", "value"), [(0, encode_string("boom")), (1, b"\x95"), (2, b"")])
def test_a_response_without_attachments_gets_the_with_attachments_flag(flag: int, value: bytes) -> None:
    frame = encode_frame(0x02, 20, 9, bytes((0x90 + flag,)) + value)
    request = _decoded(request_frame(attachments={}))  # dubbo version 2.0.2 reads response attachments
    out = DubboCodec(Role.CLIENT, CodecLimits()).edit_headers(frame, HeaderEdit(add=(("k", "v"),)), request)
    assert _response_values(out) == (flag + 3, value, {"k": "v"})
    head = DubboCodec(Role.CLIENT, CodecLimits())
    head.receive_data(out)
    ev = head.next_event()
    assert isinstance(ev, ResponseHead) and ev.request_id == 9 and ev.status == 20


def test_old_consumers_and_error_statuses_get_no_response_attachments() -> None:
    frame = encode_frame(0x02, 20, 9, b"\x91\x95")
    current = _decoded(request_frame(attachments={}))
    legacy = request_frame(attachments={})
    legacy = legacy.replace(encode_string("2.0.2"), encode_string("2.5.3"), 1)
    legacy = legacy[:12] + (len(legacy) - HEADER_LEN).to_bytes(4, "big") + legacy[HEADER_LEN:]
    codec = DubboCodec(Role.CLIENT, CodecLimits())
    edit = HeaderEdit(add=(("k", "v"),))
    assert codec.edit_headers(frame, edit, _decoded(legacy)) is frame
    assert codec.edit_headers(frame, edit, None) is frame
    assert codec.edit_headers(RES_FAIL, edit, current) is RES_FAIL  # status 70: one error string, no attachments


@pytest.mark.parametrize(
    ("version", "reads"),
    [
        ("2.0.2", True),
        ("2.7.8", True),
        ("3.0.2", True),
        ("2.6.2", False),
        ("2.0.10", False),
        ("2.0.1", False),
        ("2.8.4", False),
        ("", False),
    ],
)
def test_which_consumers_read_response_attachments(version: str, reads: bool) -> None:
    assert supports_response_attachments(version) is reads
