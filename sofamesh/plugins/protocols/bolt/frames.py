"""Bolt v1/v2 wire layout: fixed headers, the header map, CRC32, and the frames the proxy writes itself.

Pure functions over bytes. No sockets, no event loop, no logging. Layouts and constants follow
PROTOCOLS.md sections 1-5 (MOSN bolt/boltv2, sofa-bolt Java, sofa-bolt-node).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sofamesh.core.codec import HeaderEdit

PROTO_V1: Final = 0x01
PROTO_V2: Final = 0x02

TYPE_RESPONSE: Final = 0
TYPE_REQUEST: Final = 1
TYPE_ONEWAY: Final = 2

CMD_HEARTBEAT: Final = 0
CMD_REQUEST: Final = 1
CMD_RESPONSE: Final = 2

CODEC_HESSIAN2: Final = 1
CODEC_PROTOBUF: Final = 11

CRC_SWITCH_BIT: Final = 0x01  # ProtocolSwitch CRC_SWITCH_INDEX = 0
CRC_LEN: Final = 4

SOFA_RESPONSE_CLASS: Final = b"com.alipay.sofa.rpc.core.response.SofaResponse"

# Response status codes (sofa-bolt ResponseStatus).
STATUS_SUCCESS: Final = 0x00
STATUS_ERROR: Final = 0x01
STATUS_SERVER_EXCEPTION: Final = 0x02
STATUS_UNKNOWN: Final = 0x03
STATUS_SERVER_THREADPOOL_BUSY: Final = 0x04
STATUS_ERROR_COMM: Final = 0x05
STATUS_NO_PROCESSOR: Final = 0x06
STATUS_TIMEOUT: Final = 0x07
STATUS_CLIENT_SEND_ERROR: Final = 0x08
STATUS_CODEC_EXCEPTION: Final = 0x09
STATUS_CONNECTION_CLOSED: Final = 0x10
STATUS_SERVER_SERIAL_EXCEPTION: Final = 0x11
STATUS_SERVER_DESERIAL_EXCEPTION: Final = 0x12

# Fixed header structs. v1 request: proto type cmd ver2 id codec timeout classLen headerLen contentLen.
V1_REQUEST: Final = struct.Struct(">BBHBIBiHHI")  # 22 bytes
V1_RESPONSE: Final = struct.Struct(">BBHBIBHHHI")  # 20 bytes: ... codec status classLen headerLen contentLen
# v2 adds ver1 after proto and a switch byte after codec.
V2_REQUEST: Final = struct.Struct(">BBBHBIBBiHHI")  # 24 bytes
V2_RESPONSE: Final = struct.Struct(">BBBHBIBBHHHI")  # 22 bytes

V1_ID_OFFSET: Final = 5
V2_ID_OFFSET: Final = 6

_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class Framing:
    """How a frame was framed, so an answer can be framed the same way (v1/v2, ver1, switch, codec)."""

    proto: int = PROTO_V1
    ver1: int = 1
    switch: int = 0
    codec: int = CODEC_HESSIAN2
    ver2: int = 1

    @property
    def has_crc(self) -> bool:
        return self.proto == PROTO_V2 and self.ver1 == 2 and bool(self.switch & CRC_SWITCH_BIT)


V1_FRAMING: Final = Framing()


def id_offset(proto: int) -> int:
    """Where the 4-byte request id starts in a frame of protocol code ``proto``."""
    return V1_ID_OFFSET if proto == PROTO_V1 else V2_ID_OFFSET


def frame_has_crc(frame: bytes) -> bool:
    """Whether a complete frame ends with a CRC32 (v2, ver1 == 2, switch CRC bit set)."""
    if len(frame) < 12 or frame[0] != PROTO_V2 or frame[1] != 2:
        return False
    return bool(frame[11] & CRC_SWITCH_BIT)


def crc32(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def with_request_id(frame: bytes, new_id: int) -> bytes:
    """``frame`` with its request id replaced and, when the frame carries one, its CRC32 recomputed."""
    if not 0 <= new_id <= 0xFFFFFFFF:
        raise ValueError(f"bolt request id must fit in 32 bits, got {new_id}")
    proto = frame[0] if frame else -1
    if proto == PROTO_V1 and len(frame) >= V1_ID_OFFSET + 4:
        # the common case, as slices: a third of the cost of a bytearray round trip. ``int.to_bytes``
        # is a primitive in the compiled build, where ``Struct.pack`` is a bound-method call.
        return frame[:V1_ID_OFFSET] + new_id.to_bytes(4, "big") + frame[V1_ID_OFFSET + 4:]
    if proto not in (PROTO_V1, PROTO_V2):
        raise ValueError("not a bolt frame: first byte is not 0x01 or 0x02")
    off = id_offset(proto)
    out = bytearray(frame)
    _U32.pack_into(out, off, new_id)
    if frame_has_crc(frame):
        _U32.pack_into(out, len(out) - CRC_LEN, crc32(memoryview(out)[: len(out) - CRC_LEN]))
    return bytes(out)


# -- header map ---------------------------------------------------------------------------------
def parse_header_map(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, str | None]]:
    """Decode a SOFA header map from ``data[start:end]``: repeated
    ``[int32 len][utf-8 key][int32 len][utf-8 value]``.

    Length -1 is null, 0 is the empty string. Lengths count bytes; older Java SimpleMapSerializer
    versions wrote ``String.length()`` (UTF-16 units) instead, which differs only for non-ASCII text,
    so a block that does not parse by bytes is read again counting characters.
    Raises ``ValueError`` when the block is malformed either way.
    """
    stop = len(data) if end is None else end
    try:
        return _parse_header_map(data, start, stop, False)
    except ValueError:
        return _parse_header_map(data, start, stop, True)


def _parse_header_map(data: bytes, pos: int, stop: int, char_counted: bool) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    unpack = _I32.unpack_from
    key = ""
    is_key = True
    while pos < stop or not is_key:
        if pos + 4 > stop:
            raise ValueError("header map truncated inside a length")
        (n,) = unpack(data, pos)
        pos += 4
        if n == -1 and not is_key:
            out.append((key, None))
            is_key = True
            continue
        if n < 0:
            raise ValueError(f"header map length {n} is negative")
        end = _utf16_units_end(data, pos, n, stop) if char_counted else pos + n
        if end > stop:
            raise ValueError(f"header map string of length {n} runs past the header block")
        text = data[pos:end].decode("utf-8", "replace")
        pos = end
        if is_key:
            key = text
        else:
            out.append((key, text))
        is_key = not is_key
    return out


def _utf16_units_end(data: bytes, pos: int, units: int, stop: int) -> int:
    """Where ``units`` UTF-16 code units of UTF-8 text starting at ``pos`` end (past ``stop`` if short)."""
    while units > 0:
        if pos >= stop:
            return stop + 1
        b = data[pos]
        if b < 0x80:
            pos += 1
        elif b < 0xE0:
            pos += 2
        elif b < 0xF0:
            pos += 3
        else:
            pos += 4
            units -= 1  # a supplementary character is two UTF-16 units
        units -= 1
    return pos


def encode_header_map(items: list[tuple[str, str | None]]) -> bytes:
    """Encode a SOFA header map (``None`` values are written as length -1)."""
    out = bytearray()
    for k, v in items:
        kb = k.encode()
        out += _I32.pack(len(kb)) + kb
        if v is None:
            out += _I32.pack(-1)
        else:
            vb = v.encode()
            out += _I32.pack(len(vb)) + vb
    return bytes(out)


def edit_header_map(frame: bytes, edit: HeaderEdit) -> bytes:
    """``frame`` (a whole v1 or v2 request or response) with ``edit`` applied to its header map: the
    map is re-encoded (byte-counted lengths), headerLen and the v2 CRC32 are fixed; class name and
    content are copied as they are. ``frame`` itself when the edit changes nothing. Raises
    ``ValueError`` for a frame that is not a whole Bolt request or response."""
    proto = frame[0] if frame else -1
    if proto == PROTO_V1:
        response = len(frame) > 1 and frame[1] == TYPE_RESPONSE
        layout = V1_RESPONSE if response else V1_REQUEST
    elif proto == PROTO_V2:
        response = len(frame) > 2 and frame[2] == TYPE_RESPONSE
        layout = V2_RESPONSE if response else V2_REQUEST
    else:
        raise ValueError("not a bolt frame: first byte is not 0x01 or 0x02")
    if len(frame) < layout.size:
        raise ValueError(f"bolt frame of {len(frame)} bytes is shorter than its {layout.size}-byte header")
    fields = list(layout.unpack_from(frame, 0))
    class_len, header_len, content_len = fields[-3:]
    crc_len = CRC_LEN if frame_has_crc(frame) else 0
    hstart = layout.size + class_len
    hend = hstart + header_len
    if hend + content_len + crc_len != len(frame):
        raise ValueError(f"bolt frame of {len(frame)} bytes does not match its lengths")
    edited = edit.edited(list(parse_header_map(frame, hstart, hend)))
    if edited is None:
        return frame
    block = encode_header_map([(k or "", v) for k, v in edited])
    if len(block) > 0xFFFF:
        raise ValueError(f"bolt header map of {len(block)} bytes after the edit does not fit headerLen (65535)")
    fields[-2] = len(block)
    out = layout.pack(*fields) + frame[layout.size:hstart] + block + frame[hend:hend + content_len]
    return out + _U32.pack(crc32(out)) if crc_len else out


# -- frames the proxy writes ------------------------------------------------------------------
def encode_response(
    request_id: int,
    status: int,
    framing: Framing = V1_FRAMING,
    *,
    cmdcode: int = CMD_RESPONSE,
    class_name: bytes = b"",
    header: bytes = b"",
    content: bytes = b"",
) -> bytes:
    """A complete response frame framed like ``framing`` (v1 or v2, ver1, switch; CRC when due)."""
    if framing.proto == PROTO_V1:
        head = V1_RESPONSE.pack(
            PROTO_V1, TYPE_RESPONSE, cmdcode, framing.ver2, request_id, framing.codec, status,
            len(class_name), len(header), len(content),
        )
    else:
        head = V2_RESPONSE.pack(
            PROTO_V2, framing.ver1, TYPE_RESPONSE, cmdcode, framing.ver2, request_id, framing.codec,
            framing.switch, status, len(class_name), len(header), len(content),
        )
    return _finish(head + class_name + header + content, framing)


def encode_request(
    request_id: int,
    framing: Framing = V1_FRAMING,
    *,
    type_: int = TYPE_REQUEST,
    cmdcode: int = CMD_REQUEST,
    timeout_ms: int = -1,
    class_name: bytes = b"",
    header: bytes = b"",
    content: bytes = b"",
) -> bytes:
    """A complete request frame (heartbeats: ``cmdcode=CMD_HEARTBEAT`` and nothing else)."""
    if framing.proto == PROTO_V1:
        head = V1_REQUEST.pack(
            PROTO_V1, type_, cmdcode, framing.ver2, request_id, framing.codec, timeout_ms,
            len(class_name), len(header), len(content),
        )
    else:
        head = V2_REQUEST.pack(
            PROTO_V2, framing.ver1, type_, cmdcode, framing.ver2, request_id, framing.codec,
            framing.switch, timeout_ms, len(class_name), len(header), len(content),
        )
    return _finish(head + class_name + header + content, framing)


def _finish(frame: bytes, framing: Framing) -> bytes:
    if framing.has_crc:
        return frame + _U32.pack(crc32(frame))
    return frame


__all__ = [
    "CMD_HEARTBEAT",
    "CMD_REQUEST",
    "CMD_RESPONSE",
    "CODEC_HESSIAN2",
    "CODEC_PROTOBUF",
    "PROTO_V1",
    "PROTO_V2",
    "SOFA_RESPONSE_CLASS",
    "TYPE_ONEWAY",
    "TYPE_REQUEST",
    "TYPE_RESPONSE",
    "Framing",
    "crc32",
    "edit_header_map",
    "encode_header_map",
    "encode_request",
    "encode_response",
    "frame_has_crc",
    "parse_header_map",
    "with_request_id",
]
