"""HTTP/2 frames (RFC 9113 4 and 6): the numbers of the wire format and the frames we write.

Pure, no I/O, typed for mypyc. Frame types, flags, error codes and setting identifiers are plain
integer constants (the hot path compares ints, never enum members); the ``*_frame`` functions
return one encoded frame each. Reading frames is done in place by ``machine``, which walks the
received bytes with ``frame_header``.
"""

from __future__ import annotations

import struct
from typing import Final

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER_SIZE: Final = 9

# Frame types (RFC 9113 6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes (RFC 9113 7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
SETTINGS_TIMEOUT: Final = 0x4
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
CONNECT_ERROR: Final = 0xA
ENHANCE_YOUR_CALM: Final = 0xB
INADEQUATE_SECURITY: Final = 0xC
HTTP_1_1_REQUIRED: Final = 0xD
_ERROR_NAMES: Final = (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
    "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
)  # fmt: skip

# Settings (RFC 9113 6.5.2; 8 from RFC 8441).
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6
ENABLE_CONNECT_PROTOCOL: Final = 0x8

DEFAULT_WINDOW: Final = 65_535
MAX_WINDOW: Final = 2**31 - 1
MIN_FRAME_SIZE: Final = 16_384
MAX_FRAME_SIZE_LIMIT: Final = 2**24 - 1

_HEAD: Final = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
_U32: Final = struct.Struct(">L")
_SETTING: Final = struct.Struct(">HL")
_GOAWAY: Final = struct.Struct(">LL")


def error_name(code: int) -> str:
    """The RFC's name of an error code (``error 0x2a`` for one it does not define)."""
    if 0 <= code < len(_ERROR_NAMES):
        return _ERROR_NAMES[code]
    return f"error {code:#x}"


def frame_header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte frame header."""
    return _HEAD.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id)


def settings_frame(settings: list[tuple[int, int]]) -> bytes:
    """A SETTINGS frame carrying ``(identifier, value)`` pairs in order."""
    payload = b"".join([_SETTING.pack(ident, value) for ident, value in settings])
    return frame_header(len(payload), SETTINGS, 0, 0) + payload


SETTINGS_ACK: Final = _HEAD.pack(0, 0, SETTINGS, ACK, 0)


def ping_frame(opaque: bytes, ack: bool) -> bytes:
    """A PING (or its ACK) with 8 bytes of opaque data."""
    return _HEAD.pack(0, 8, PING, ACK if ack else 0, 0) + opaque


def goaway_frame(last_stream_id: int, error_code: int, debug: bytes = b"") -> bytes:
    return frame_header(8 + len(debug), GOAWAY, 0, 0) + _GOAWAY.pack(last_stream_id, error_code) + debug


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    return _HEAD.pack(0, 4, RST_STREAM, 0, stream_id) + _U32.pack(error_code)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return _HEAD.pack(0, 4, WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


__all__ = [
    "ACK", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "CONTINUATION", "DATA", "DEFAULT_WINDOW",
    "ENABLE_CONNECT_PROTOCOL", "ENABLE_PUSH", "END_HEADERS", "END_STREAM", "ENHANCE_YOUR_CALM", "FLOW_CONTROL_ERROR",
    "FRAME_SIZE_ERROR", "GOAWAY", "HEADERS", "HEADER_SIZE", "HEADER_TABLE_SIZE", "HTTP_1_1_REQUIRED",
    "INADEQUATE_SECURITY", "INITIAL_WINDOW_SIZE", "INTERNAL_ERROR", "MAX_CONCURRENT_STREAMS", "MAX_FRAME_SIZE",
    "MAX_FRAME_SIZE_LIMIT", "MAX_HEADER_LIST_SIZE", "MAX_WINDOW", "MIN_FRAME_SIZE", "NO_ERROR", "PADDED", "PING",
    "PREFACE", "PRIORITY", "PRIORITY_FLAG", "PROTOCOL_ERROR", "PUSH_PROMISE", "REFUSED_STREAM", "RST_STREAM",
    "SETTINGS", "SETTINGS_ACK", "SETTINGS_TIMEOUT", "STREAM_CLOSED", "WINDOW_UPDATE", "error_name", "frame_header",
    "goaway_frame", "ping_frame", "rst_stream_frame", "settings_frame", "window_update_frame",
]  # fmt: skip
