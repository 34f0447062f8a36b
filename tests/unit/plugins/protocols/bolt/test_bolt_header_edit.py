"""Bolt header maps edited in place (``BoltCodec.edit_headers``) on frames captured from real peers:
only the header map is re-encoded; class name and content are copied; headerLen and the v2 CRC32
are fixed, and the codec's own decoder reads the result back."""

from __future__ import annotations

import pytest

from sofamesh.core.codec import CodecLimits, HeaderEdit, Role
from sofamesh.core.events import RequestHead, ResponseHead
from sofamesh.plugins.protocols.bolt.codec import BoltCodec
from sofamesh.plugins.protocols.bolt.frames import (
    V1_REQUEST,
    V1_RESPONSE,
    V2_REQUEST,
    V2_RESPONSE,
    crc32,
    frame_has_crc,
    parse_header_map,
)

from . import bolt_captured as cap

EDIT = HeaderEdit(
    remove=frozenset({"sofa_head_target_app", "absent"}),
    set=(("x-tenant", "租户-1 😀"), ("rpc_trace_context.sofaCallerApp", "mesh")),
    add=(("x-added", "yes"),),
)


def _decode(frame: bytes, role: Role) -> RequestHead | ResponseHead:
    codec = BoltCodec(role, CodecLimits())
    codec.receive_data(frame)
    ev = codec.next_event()
    assert isinstance(ev, (RequestHead, ResponseHead))
    return ev


def _sections(frame: bytes) -> tuple[bytes, list[tuple[str, str | None]], bytes]:
    response = frame[1 if frame[0] == 1 else 2] == 0
    layout = {(1, False): V1_REQUEST, (1, True): V1_RESPONSE, (2, False): V2_REQUEST, (2, True): V2_RESPONSE}[
        (frame[0], response)
    ]
    class_len, header_len, content_len = layout.unpack_from(frame)[-3:]
    hstart = layout.size + class_len
    end = hstart + header_len + content_len
    assert end + (4 if frame_has_crc(frame) else 0) == len(frame)
    return (
        frame[layout.size : hstart],
        parse_header_map(frame, hstart, hstart + header_len),
        frame[hstart + header_len : end],
    )


@pytest.mark.parametrize(
    "frame",
    [cap.NODE_V1_REQUEST, cap.NODE_V2_REQUEST, cap.NODE_V2CRC_REQUEST, cap.ANTHUNDER_REQUEST],
    ids=["node-v1", "node-v2", "node-v2-crc", "anthunder"],
)
def test_request_header_map_is_edited_and_the_frame_reads_back(frame: bytes) -> None:
    before = _decode(frame, Role.SERVER)
    out = BoltCodec(Role.SERVER, CodecLimits()).edit_headers(frame, EDIT)
    cls, header, content = _sections(out)
    old_cls, old_header, old_content = _sections(frame)
    assert (cls, content) == (old_cls, old_content)
    expect = [(k, v) for k, v in old_header if k != "sofa_head_target_app"]
    expect += [(k, v) for k, v in EDIT.set + EDIT.add if k not in dict(old_header)]
    assert dict(header) == dict(expect) and len(header) == len(expect)
    if frame_has_crc(out):
        assert crc32(out[:-4]) == int.from_bytes(out[-4:], "big")
    head = _decode(out, Role.SERVER)
    assert isinstance(head, RequestHead) and isinstance(before, RequestHead)
    assert (head.service, head.request_id, head.timeout_ms) == (before.service, before.request_id, before.timeout_ms)
    assert head.headers.get("x-tenant") == "租户-1 😀" and head.headers.get("x-added") == "yes"
    assert head.headers.get("sofa_head_target_app") is None
    codec = BoltCodec(Role.SERVER, CodecLimits())
    assert codec.request_argument(head, 0) == codec.request_argument(before, 0)


@pytest.mark.parametrize("frame", [cap.NODE_V1_RESPONSE, cap.NODE_V2_RESPONSE, cap.NODE_V2CRC_RESPONSE])
def test_response_without_a_header_map_gets_one(frame: bytes) -> None:
    assert _sections(frame)[1] == []
    out = BoltCodec(Role.CLIENT, CodecLimits()).edit_headers(frame, HeaderEdit(set=(("served-by", "mesh"),)))
    head = _decode(out, Role.CLIENT)
    assert isinstance(head, ResponseHead) and head.headers.get("served-by") == "mesh"
    assert head.status == _decode(frame, Role.CLIENT).status
    assert _sections(out)[0::2] == _sections(frame)[0::2]
    assert len(out) == len(frame) + 4 + len("served-by") + 4 + len("mesh")


def test_removing_an_absent_key_or_adding_a_present_one_leaves_the_frame_as_it_is() -> None:
    codec = BoltCodec(Role.SERVER, CodecLimits())
    assert codec.edit_headers(cap.NODE_V1_REQUEST, HeaderEdit(remove=frozenset({"nope"}))) is cap.NODE_V1_REQUEST
    assert codec.edit_headers(cap.NODE_V1_REQUEST, HeaderEdit(add=(("service", "other"),))) is cap.NODE_V1_REQUEST
    out = codec.edit_headers(cap.NODE_V1_REQUEST, HeaderEdit(remove=frozenset({"service"})))
    assert _sections(out)[1] == [] and len(out) == len(cap.NODE_V1_REQUEST) - 42


def test_a_frame_whose_lengths_do_not_add_up_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match its lengths"):
        BoltCodec(Role.SERVER, CodecLimits()).edit_headers(cap.NODE_V1_REQUEST[:-1], EDIT)
    with pytest.raises(ValueError, match="not a bolt frame"):
        BoltCodec(Role.SERVER, CodecLimits()).edit_headers(b"\x07abc", EDIT)
