"""Dubbo 2 wire format: the 16-byte header, body heads and the frames the proxy writes itself.

Pure: bytes in, values out. No sockets, no event loop, no logging.

Header (big-endian): magic ``0xdabb`` (2) · flag (1: 0x80 request, 0x40 two-way, 0x20 event, low
5 bits serialization id, 2 = hessian2) · status (1, responses) · request id (8) · body length (4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from sofamesh.plugins.protocols.dubbo.hessian import HIGH_SURROGATE_MAX, HIGH_SURROGATE_MIN, HessianReader

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
    "encode_frame",
    "encode_request",
    "encode_string",
    "heartbeat_frame",
    "heartbeat_reply_frame",
    "parse_header",
    "read_attachments",
    "read_body_head",
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


def encode_string(text: str) -> bytes:
    """Hessian 2.0 string: compact (< 32 chars), medium (< 1024), else 'R' chunks and a final 'S'.
    Lengths are UTF-16 code units; supplementary characters are written as CESU-8 surrogates and a
    chunk never ends between the two halves of a pair (as Java's ``Hessian2Output`` writes them)."""
    units = text if text.isascii() else "".join(
        c if ord(c) < 0x10000 else chr(0xD7C0 + (ord(c) >> 10)) + chr(0xDC00 | (ord(c) & 0x3FF))
        for c in text)
    out = bytearray()
    while len(units) > 0x8000:
        n = 0x8000 - 1 if HIGH_SURROGATE_MIN <= units[0x8000 - 1] <= HIGH_SURROGATE_MAX else 0x8000
        out += b"R" + n.to_bytes(2, "big") + units[:n].encode("utf-8", "surrogatepass")
        units = units[n:]
    n = len(units)
    if n < 32:
        out.append(n)
    elif n < 1024:
        out += bytes((0x30 + (n >> 8), n & 0xFF))
    else:
        out += b"S" + n.to_bytes(2, "big")
    out += units.encode("utf-8", "surrogatepass")
    return bytes(out)


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

