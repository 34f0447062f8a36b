"""Dubbo 2 wire format: the 16-byte header, body heads and the frames the proxy writes itself.

Pure: bytes in, values out. No sockets, no event loop, no logging.

Header (big-endian): magic ``0xdabb`` (2) · flag (1: 0x80 request, 0x40 two-way, 0x20 event, low
5 bits serialization id, 2 = hessian2) · status (1, responses) · request id (8) · body length (4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sofamesh.core.hessian.reader import HessianError, HessianReader, is_structured_tag
from sofamesh.core.hessian.writer import encode_string

if TYPE_CHECKING:
    from sofamesh.core.codec import HeaderEdit

__all__ = [
    "FLAG_EVENT",
    "FLAG_REQUEST",
    "FLAG_TWOWAY",
    "HEADER",
    "HEADER_LEN",
    "MAGIC",
    "SERIALIZATION_HESSIAN2",
    "SERIALIZATION_MASK",
    "BodyHead",
    "Header",
    "count_parameters",
    "edit_request_attachments",
    "edit_response_attachments",
    "encode_frame",
    "encode_request",
    "encode_string",
    "heartbeat_frame",
    "heartbeat_reply_frame",
    "parse_header",
    "read_attachments",
    "read_body_head",
    "supports_response_attachments",
]

MAGIC: Final = b"\xda\xbb"
HEADER_LEN: Final = 16
HEADER: Final = struct.Struct(">2sBBQi")

FLAG_REQUEST: Final = 0x80
FLAG_TWOWAY: Final = 0x40
FLAG_EVENT: Final = 0x20
SERIALIZATION_MASK: Final = 0x1F
SERIALIZATION_HESSIAN2: Final = 2

# Response status byte [DUBBO-J Response; MOSN dubbo/types.go]
STATUS_OK: Final = 20
STATUS_CLIENT_TIMEOUT: Final = 30
STATUS_SERVER_TIMEOUT: Final = 31
STATUS_BAD_REQUEST: Final = 40
STATUS_BAD_RESPONSE: Final = 50
STATUS_SERVICE_NOT_FOUND: Final = 60
STATUS_SERVICE_ERROR: Final = 70
STATUS_SERVER_ERROR: Final = 80
STATUS_CLIENT_ERROR: Final = 90
STATUS_THREADPOOL_EXHAUSTED: Final = 100

HESSIAN_NULL: Final = b"N"


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed 16 bytes of a frame."""

    flag: int
    status: int
    request_id: int  # unsigned 64-bit view of Java's signed long
    body_len: int

    @property
    def is_request(self) -> bool:
        return bool(self.flag & FLAG_REQUEST)

    @property
    def two_way(self) -> bool:
        return bool(self.flag & FLAG_TWOWAY)

    @property
    def event(self) -> bool:
        return bool(self.flag & FLAG_EVENT)

    @property
    def serialization(self) -> int:
        return self.flag & SERIALIZATION_MASK


@dataclass(frozen=True, slots=True)
class BodyHead:
    """The leading values of a request body [DUBBO-J DubboCodec.encodeRequestData]."""

    dubbo_version: str
    path: str
    version: str | None
    method: str
    parameter_types: str
    args_offset: int  # body offset of the first argument (= bytes the head values take)


def read_body_head(data: bytes, start: int = 0) -> BodyHead:
    """Read dubbo version, path, service version (or null), method and the parameter-type
    descriptor. A dubbox-style int between method and descriptor (dubbo2.js writes ``-1``) is
    skipped. ``start`` is where the body begins in ``data`` (16 in a whole frame); offsets in the
    result are offsets in ``data``. Raises ``hessian.HessianError``."""
    r = HessianReader(data, start)
    dubbo_version = r.read_string()
    path = r.read_string()
    version = r.read_string_or_null()
    method = r.read_string()
    tag = r.peek_tag()
    if 0x80 <= tag <= 0xD7 or tag == 0x49:
        r.read_int()
    types = r.read_string()
    return BodyHead(dubbo_version, path, version, method, types, r.pos)


_PRIMITIVES: Final = frozenset("ZBCSIJFD")


def count_parameters(descriptor: str) -> int:
    """How many arguments a JVM parameter descriptor names (``"Ljava/lang/String;I[J"`` -> 3).
    Raises ``ValueError`` for a malformed descriptor."""
    n = 0
    i = 0
    size = len(descriptor)
    while i < size:
        c = descriptor[i]
        while c == "[":
            i += 1
            if i >= size:
                raise ValueError(f"parameter descriptor {descriptor!r} ends inside an array type")
            c = descriptor[i]
        if c == "L":
            end = descriptor.find(";", i)
            if end < 0:
                raise ValueError(f"parameter descriptor {descriptor!r}: class name at {i} has no ';'")
            i = end + 1
        elif c in _PRIMITIVES:
            i += 1
        else:
            raise ValueError(f"parameter descriptor {descriptor!r}: unexpected {c!r} at {i}")
        n += 1
    return n


def read_attachments(data: bytes, head: BodyHead, max_entries: int) -> dict[str, str]:
    """The attachments map that follows the arguments (string, int and boolean values as text).
    Skips every argument: costly, so the codec calls it only when a route asks for a key that
    lives there. Raises ``ValueError`` (``hessian.HessianError`` is one)."""
    r = HessianReader(data, head.args_offset)
    # Class definitions written in the head are impossible (strings only), so a fresh reader that
    # starts at the arguments sees every definition the arguments and attachments use.
    for _ in range(count_parameters(head.parameter_types)):
        r.skip()
    if r.at_end():
        return {}
    tag = r.peek_tag()
    if tag != 0x48 and tag != 0x4D:
        return {}
    return r.read_string_map(max_entries)


# Response body flags [DUBBO-J DubboCodec]: 0-2 without attachments, 3-5 the same with them.
RESPONSE_WITH_EXCEPTION: Final = 0
RESPONSE_NULL_VALUE: Final = 2
RESPONSE_NULL_VALUE_WITH_ATTACHMENTS: Final = 5
_WITH_ATTACHMENTS: Final = 3  # added to a flag 0-2


def _int_version(version: str) -> int:
    """A Dubbo version string as Dubbo compares it: two decimal digits per part, three-part versions
    scaled to four (``2.0.2`` -> 2000200, ``2.6.2`` -> 2060200)."""
    parts = version.split(".")
    v = 0
    for i, part in enumerate(parts):
        digits = ""
        for c in part:
            if not c.isdigit():
                break
            digits += c
        if digits:
            v += int(digits) * 10 ** ((len(parts) - i - 1) * 2)
    return v * 100 if len(parts) == 3 else v


def supports_response_attachments(dubbo_version: str) -> bool:
    """Whether a consumer that sent ``dubbo_version`` reads response flags 3-5 (attachments), as a
    Dubbo 2.7 provider decides: from 2.0.2 on, except the jar versions 2.0.10-2.6.2 old clients
    sent there and the 2.8.x that dubbox used."""
    if not dubbo_version:
        return False
    v = _int_version(dubbo_version)
    if 2001000 <= v < 2060300 or 2080000 <= v < 2090000:
        return False
    return v >= 2000200


def _edited_map(entries: list[tuple[str | None, bytes, int]], edit: HeaderEdit) -> bytes | None:
    """The entries of an attachments map after ``edit``, encoded; None when nothing changes. Entries
    the edit keeps are copied as written; a structured value (map, list, object) is never dropped,
    since later back references in the body may count it."""
    touched = edit.remove | {k for k, _ in edit.set}
    for key, _, tag in entries:
        if key is not None and key in touched and is_structured_tag(tag):
            raise HessianError(f"attachment {key!r} holds a structured value (tag 0x{tag:02x}); "
                               "only scalar attachments can be removed or replaced")
    edited = edit.edited([(key, raw) for key, raw, _ in entries])
    if edited is None:
        return None
    return b"".join([v if isinstance(v, bytes) else encode_string(k or "") + encode_string(v) for k, v in edited])


def _replace_body(frame: bytes, start: int, end: int, middle: bytes) -> bytes:
    body = frame[HEADER_LEN:start] + middle + frame[end:]
    if len(body) > 0x7FFFFFFF:
        raise HessianError(f"dubbo body of {len(body)} bytes after the edit does not fit its length")
    return frame[:12] + len(body).to_bytes(4, "big") + body


def edit_request_attachments(frame: bytes, edit: HeaderEdit, head: BodyHead | None = None) -> bytes:
    """``frame`` (a whole hessian2 request) with ``edit`` applied to its attachments map, the last
    value of the body: the arguments before it are skipped, not decoded, and only the map is
    re-encoded (a request without one gets one). The body length is fixed. ``head`` is the frame's
    body head when already read. Raises ``ValueError``."""
    if head is None:
        head = read_body_head(frame, HEADER_LEN)
    r = HessianReader(frame, head.args_offset)
    for _ in range(count_parameters(head.parameter_types)):
        r.skip()
    return _edit_map_at(frame, r, edit)


def _edit_map_at(frame: bytes, r: HessianReader, edit: HeaderEdit) -> bytes:
    start = r.pos
    if r.at_end():
        entries = _edited_map([], edit)
        return frame if entries is None else _replace_body(frame, start, start, b"H" + entries + b"Z")
    first, found = r.read_map_entries()
    entries = _edited_map(found, edit)
    if entries is None:
        return frame
    return _replace_body(frame, first, r.pos, entries + b"Z")


def edit_response_attachments(frame: bytes, edit: HeaderEdit, add_attachments: bool) -> bytes:
    """``frame`` (a whole hessian2 response) with ``edit`` applied to its attachments (flags 3-5).
    A response without them (flags 0-2) gets them, its flag moved to 3-5 as a Dubbo 2.7 provider
    writes it, only when ``add_attachments`` (its consumer reads them: ``supports_response_attachments``).
    A response whose status is not OK carries one error string and no attachments: returned as it
    is. Raises ``ValueError``."""
    if len(frame) < HEADER_LEN or frame[3] != STATUS_OK or frame[2] & FLAG_EVENT:
        return frame
    r = HessianReader(frame, HEADER_LEN)
    flag = r.read_int()
    flag_end = r.pos
    if not RESPONSE_WITH_EXCEPTION <= flag <= RESPONSE_NULL_VALUE_WITH_ATTACHMENTS:
        raise HessianError(f"dubbo: unknown response flag {flag}")
    if flag % _WITH_ATTACHMENTS != RESPONSE_NULL_VALUE:
        r.skip()  # the value or the exception
    if flag >= _WITH_ATTACHMENTS:
        return _edit_map_at(frame, r, edit)
    if not add_attachments:
        return frame
    entries = _edited_map([], edit)
    if entries is None:
        return frame
    value_end = r.pos
    moved = bytes((0x90 + flag + _WITH_ATTACHMENTS,))  # compact int
    return _replace_body(frame, HEADER_LEN, value_end, moved + frame[flag_end:value_end] + b"H" + entries + b"Z")


def argument_bytes(data: bytes, head: BodyHead, index: int) -> bytes | None:
    """The encoded bytes of argument ``index`` (hessian2, as the consumer wrote it), found by
    skipping the ones before it without decoding them; None when the request has fewer arguments.
    Raises ``ValueError`` (``hessian.HessianError`` is one)."""
    if index >= count_parameters(head.parameter_types):
        return None
    r = HessianReader(data, head.args_offset)
    for _ in range(index):
        r.skip()
    start = r.pos
    r.skip()
    return bytes(data[start:r.pos])


def encode_frame(flag: int, status: int, request_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, flag, status, request_id & 0xFFFF_FFFF_FFFF_FFFF, len(body)) + body


def encode_request(request_id: int, service: str, method: str, *, version: str | None = "",
                   parameter_types: str = "", args: bytes = b"", attachments: dict[str, str] | None = None,
                   two_way: bool = True, dubbo_version: str = "2.0.2") -> bytes:
    """A hessian2 request frame. ``args`` are the already encoded arguments, one hessian value per
    parameter in ``parameter_types``; ``attachments`` becomes an untyped map (``H``)."""
    att = attachments or {}
    body = b"".join((
        encode_string(dubbo_version), encode_string(service),
        b"N" if version is None else encode_string(version), encode_string(method),
        encode_string(parameter_types), args,
        b"H", *(encode_string(k) + encode_string(v) for k, v in att.items()), b"Z",
    ))
    flag = FLAG_REQUEST | SERIALIZATION_HESSIAN2 | (FLAG_TWOWAY if two_way else 0)
    return encode_frame(flag, 0, request_id, body)


def heartbeat_frame(request_id: int) -> bytes:
    """A two-way heartbeat request (flag 0xe2, body hessian null)."""
    return encode_frame(FLAG_REQUEST | FLAG_TWOWAY | FLAG_EVENT | SERIALIZATION_HESSIAN2, 0, request_id,
                        HESSIAN_NULL)


def heartbeat_reply_frame(request_id: int, serialization: int = SERIALIZATION_HESSIAN2) -> bytes:
    """The answer to a heartbeat (flag 0x22, status 20, body hessian null)."""
    return encode_frame(FLAG_EVENT | serialization, STATUS_OK, request_id, HESSIAN_NULL)


def parse_header(data: bytes) -> Header:
    _magic, flag, status, request_id, body_len = HEADER.unpack_from(data)
    return Header(flag, status, request_id, body_len)

