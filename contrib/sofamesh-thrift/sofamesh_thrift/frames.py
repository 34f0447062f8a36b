"""Thrift binary protocol over framed transport: message headers, seqid patching, TApplicationException.

Pure: bytes in, values out. No sockets, no event loop, no logging. Only the message header (and,
for replies, the first field of the result struct) is ever read; arguments and results are
forwarded as opaque bytes.

Wire facts (Apache Thrift ``TBinaryProtocol`` / ``TFramedTransport``; thriftpy2 writes the same):

* frame = ``i32 length`` + message; every integer is big-endian.
* strict message header: ``i32 (0x80010000 | type)``, ``i32 name length``, name, ``i32 seqid``.
* non-strict (old) header: ``i32 name length``, name, ``i8 type``, ``i32 seqid``.
* message types: 1 CALL, 2 REPLY, 3 EXCEPTION, 4 ONEWAY.
* multiplexed protocol: a CALL/ONEWAY name is ``Service:method``; replies carry ``method``.
* a REPLY body is the result struct: field 0 = success, field >= 1 = a declared exception.
* an EXCEPTION body is ``TApplicationException {1: string message, 2: i32 type}``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from sofamesh.core.errors import RemoteProtocolError

CALL: Final = 1
REPLY: Final = 2
EXCEPTION: Final = 3
ONEWAY: Final = 4
MESSAGE_TYPES: Final = {CALL: "call", REPLY: "reply", EXCEPTION: "exception", ONEWAY: "oneway"}

VERSION_1: Final = 0x80010000
VERSION_MASK: Final = 0xFFFF0000
MULTIPLEX_SEPARATOR: Final = ":"

# TApplicationException.type values (Apache Thrift lib/*/TApplicationException)
UNKNOWN: Final = 0
UNKNOWN_METHOD: Final = 1
INVALID_MESSAGE_TYPE: Final = 2
WRONG_METHOD_NAME: Final = 3
BAD_SEQUENCE_ID: Final = 4
MISSING_RESULT: Final = 5
INTERNAL_ERROR: Final = 6
PROTOCOL_ERROR: Final = 7

# field type ids
T_STOP: Final = 0
T_I32: Final = 8
T_STRING: Final = 11

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_FIELD = struct.Struct(">bh")


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The routable part of one Thrift message. Offsets count from the frame's first byte."""

    name: str
    type: int
    seqid: int  # unsigned 32-bit view of the wire's i32
    strict: bool
    seqid_offset: int
    body_offset: int

    @property
    def service(self) -> str:
        """The multiplexed-protocol service prefix, or ``""``."""
        svc, sep, _ = self.name.partition(MULTIPLEX_SEPARATOR)
        return svc if sep else ""

    @property
    def method(self) -> str:
        _, sep, method = self.name.partition(MULTIPLEX_SEPARATOR)
        return method if sep else self.name


def frame_length(prefix: bytes) -> int:
    """The signed i32 frame length at the start of ``prefix`` (which holds at least 4 bytes)."""
    return int(_I32.unpack_from(prefix, 0)[0])


def parse_header(frame: bytes, max_name: int = 64 * 1024) -> MessageHeader:
    """Parse the message header of a complete frame (length prefix included).

    Raises ``RemoteProtocolError`` naming what is wrong; the caller attaches a partial head.
    """
    end = len(frame)
    if end < 8:
        raise RemoteProtocolError(f"thrift: frame of {end - 4} bytes is too short for a message header")
    first = _I32.unpack_from(frame, 4)[0]
    if first < 0:
        version = first & 0xFFFFFFFF
        if version & VERSION_MASK != VERSION_1:
            raise RemoteProtocolError(f"thrift: bad binary protocol version 0x{version:08x} (want 0x8001xxxx)")
        mtype = version & 0xFF
        if end < 12:
            raise RemoteProtocolError("thrift: frame ends inside the message header")
        name_len = _I32.unpack_from(frame, 8)[0]
        name_at = 12
        strict = True
    else:
        name_len = first
        name_at = 8
        strict = False
        mtype = -1
    if name_len < 0 or name_len > max_name:
        raise RemoteProtocolError(f"thrift: bad message name length {name_len}")
    after_name = name_at + name_len
    if not strict:
        if after_name + 1 > end:
            raise RemoteProtocolError("thrift: frame ends inside the message header")
        mtype = frame[after_name]
        after_name += 1
    seqid_at = after_name
    if seqid_at + 4 > end:
        raise RemoteProtocolError("thrift: frame ends inside the message header")
    if mtype not in MESSAGE_TYPES:
        raise RemoteProtocolError(f"thrift: unknown message type {mtype}")
    try:
        name = frame[name_at : name_at + name_len].decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("thrift: message name is not UTF-8") from None
    seqid = int(_U32.unpack_from(frame, seqid_at)[0])
    return MessageHeader(name, mtype, seqid, strict, seqid_at, seqid_at + 4)


def seqid_offset(frame: bytes) -> int:
    """Where the seqid of a complete frame starts (cheaper than ``parse_header``)."""
    if frame[4] & 0x80:
        return 12 + int(_I32.unpack_from(frame, 8)[0])
    return 8 + int(_I32.unpack_from(frame, 4)[0]) + 1


def with_seqid(frame: bytes, seqid: int) -> bytes:
    """``frame`` with its seqid replaced (``seqid`` taken modulo 2**32)."""
    at = seqid_offset(frame)
    return b"".join((frame[:at], _U32.pack(seqid & 0xFFFFFFFF), frame[at + 4 :]))


def encode_message(name: str, mtype: int, seqid: int, body: bytes, strict: bool = True) -> bytes:
    """A whole frame: length prefix, message header and ``body`` (an encoded struct)."""
    raw_name = name.encode("utf-8")
    if strict:
        head = _U32.pack(VERSION_1 | mtype) + _I32.pack(len(raw_name)) + raw_name + _U32.pack(seqid & 0xFFFFFFFF)
    else:
        head = _I32.pack(len(raw_name)) + raw_name + bytes((mtype,)) + _U32.pack(seqid & 0xFFFFFFFF)
    return _I32.pack(len(head) + len(body)) + head + body


def application_exception(message: str, exc_type: int) -> bytes:
    """An encoded ``TApplicationException`` struct."""
    raw = message.encode("utf-8")
    return (_FIELD.pack(T_STRING, 1) + _I32.pack(len(raw)) + raw + _FIELD.pack(T_I32, 2) + _I32.pack(exc_type)
            + bytes((T_STOP,)))


def read_application_exception(frame: bytes, at: int) -> tuple[str, int]:
    """(message, type) of the ``TApplicationException`` struct at ``at``; unknown fields end the read."""
    message, exc_type, end = "", UNKNOWN, len(frame)
    while at + 1 <= end:
        ftype = frame[at]
        if ftype == T_STOP or at + 3 > end:
            break
        fid = _FIELD.unpack_from(frame, at)[1]
        at += 3
        if ftype == T_STRING and fid == 1 and at + 4 <= end:
            n = _I32.unpack_from(frame, at)[0]
            if n < 0 or at + 4 + n > end:
                break
            message = frame[at + 4 : at + 4 + n].decode("utf-8", "replace")
            at += 4 + n
        elif ftype == T_I32 and fid == 2 and at + 4 <= end:
            exc_type = _I32.unpack_from(frame, at)[0]
            at += 4
        else:
            break
    return message, exc_type


def result_field_id(frame: bytes, at: int) -> int:
    """The first field id of the result struct at ``at``: 0 success (or void), >= 1 a declared exception."""
    if at >= len(frame) or frame[at] == T_STOP or at + 3 > len(frame):
        return 0
    return int(_FIELD.unpack_from(frame, at)[1])


__all__ = [
    "CALL",
    "EXCEPTION",
    "INTERNAL_ERROR",
    "MESSAGE_TYPES",
    "ONEWAY",
    "PROTOCOL_ERROR",
    "REPLY",
    "UNKNOWN",
    "UNKNOWN_METHOD",
    "MessageHeader",
    "application_exception",
    "encode_message",
    "frame_length",
    "parse_header",
    "read_application_exception",
    "result_field_id",
    "seqid_offset",
    "with_seqid",
]
