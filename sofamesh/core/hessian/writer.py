"""Hessian 2.0 writer: Python values in, bytes out, in the shortest forms Java's ``Hessian2Output``
writes (compact ints, longs, doubles, dates, strings and binary; class definitions once per stream).

Pure: no sockets, no event loop, no logging. String lengths count UTF-16 code units; a
supplementary character is written as two 3-byte surrogates (CESU-8), and a chunk never ends
between the two halves of a pair, as Java writes them. Values are written without back references
(``Q``): a value that contains itself is an error, not a loop.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from sofamesh.core.hessian.reader import HIGH_SURROGATE_MAX, HIGH_SURROGATE_MIN, HessianError
from sofamesh.core.hessian.values import JavaLong, JavaObject, TypedList, TypedMap

__all__ = ["HessianWriter", "encode", "encode_string"]

_CHUNK: Final = 0x8000  # longest string or binary chunk, in units or bytes
_MAX_DEPTH: Final = 64
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE: Final = struct.Struct(">d")
_INT: Final = struct.Struct(">i")
_LONG: Final = struct.Struct(">q")


def _utf16_units(text: str) -> str:
    """``text`` with each supplementary character as its surrogate pair (one char per UTF-16 unit)."""
    if text.isascii():
        return text
    return "".join(
        c if ord(c) < 0x10000 else chr(0xD7C0 + (ord(c) >> 10)) + chr(0xDC00 | (ord(c) & 0x3FF)) for c in text
    )


def encode_string(text: str) -> bytes:
    """Hessian 2.0 string: compact (< 32 units), medium (< 1024), else ``R`` chunks and a final ``S``."""
    units = _utf16_units(text)
    out = bytearray()
    while len(units) > _CHUNK:
        n = _CHUNK - 1 if HIGH_SURROGATE_MIN <= units[_CHUNK - 1] <= HIGH_SURROGATE_MAX else _CHUNK
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


def encode_int(v: int) -> bytes:
    """A Java ``int`` (-2**31 .. 2**31-1) in its shortest form."""
    if -16 <= v <= 47:
        return bytes((0x90 + v,))
    if -2048 <= v <= 2047:
        return bytes((0xC8 + (v >> 8), v & 0xFF))
    if -262144 <= v <= 262143:
        return bytes((0xD4 + (v >> 16), (v >> 8) & 0xFF, v & 0xFF))
    if -(2**31) <= v < 2**31:
        return b"I" + _INT.pack(v)
    raise HessianError(f"hessian: {v} does not fit a Java int (write it as a JavaLong)")


def encode_long(v: int) -> bytes:
    """A Java ``long`` (-2**63 .. 2**63-1) in its shortest form."""
    if -8 <= v <= 15:
        return bytes((0xE0 + v,))
    if -2048 <= v <= 2047:
        return bytes((0xF8 + (v >> 8), v & 0xFF))
    if -262144 <= v <= 262143:
        return bytes((0x3C + (v >> 16), (v >> 8) & 0xFF, v & 0xFF))
    if -(2**31) <= v < 2**31:
        return b"\x59" + _INT.pack(v)
    if -(2**63) <= v < 2**63:
        return b"L" + _LONG.pack(v)
    raise HessianError(f"hessian: {v} does not fit a Java long")


def encode_double(v: float) -> bytes:
    """A Java ``double``: 0.0, 1.0, whole values in a byte or a short, thousandths in an int, else
    8 bytes (the choices of Java's ``Hessian2Output``; -0.0 is written as 0.0, as there)."""
    if math.isfinite(v) and abs(v) < 2147483648.0:
        whole = int(v)
        if whole == v:
            if whole == 0:
                return b"\x5b"
            if whole == 1:
                return b"\x5c"
            if -128 <= whole <= 127:
                return bytes((0x5D, whole & 0xFF))
            if -32768 <= whole <= 32767:
                return b"\x5e" + (whole & 0xFFFF).to_bytes(2, "big")
        mills = int(v * 1000)
        if -(2**31) <= mills < 2**31 and mills * 0.001 == v:
            return b"\x5f" + _INT.pack(mills)
    return b"D" + _DOUBLE.pack(v)


def date_millis(value: datetime) -> int:
    """Milliseconds since the epoch of ``value`` (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def encode_date(millis: int) -> bytes:
    """A ``java.util.Date``: whole minutes in 4 bytes (``K``), else milliseconds in 8 (``J``)."""
    if millis % 60000 == 0 and -(2**31) <= millis // 60000 < 2**31:
        return b"K" + _INT.pack(millis // 60000)
    return b"J" + _LONG.pack(millis)


def encode_binary(data: bytes) -> bytes:
    """A ``byte[]``: compact (< 16), medium (< 1024), else ``A`` chunks and a final ``B``."""
    out = bytearray()
    view = memoryview(data)
    while len(view) > _CHUNK:
        out += b"A" + _CHUNK.to_bytes(2, "big") + view[:_CHUNK]
        view = view[_CHUNK:]
    n = len(view)
    if n < 16:
        out.append(0x20 + n)
    elif n < 1024:
        out += bytes((0x34 + (n >> 8), n & 0xFF))
    else:
        out += b"B" + n.to_bytes(2, "big")
    out += view
    return bytes(out)


class HessianWriter:
    """Writes one Hessian 2.0 stream (for Dubbo: a message body; for Bolt: a content).

    Class definitions and list/map type names are written once and referred to by index after
    that, as Java's ``Hessian2Output`` does over a whole stream.
    """

    __slots__ = ("_classes", "_out", "_types")

    def __init__(self) -> None:
        self._out = bytearray()
        self._classes: dict[tuple[str, tuple[str, ...]], int] = {}
        self._types: dict[str, int] = {}

    def getvalue(self) -> bytes:
        return bytes(self._out)

    def write(self, value: object) -> HessianWriter:
        """Append one value (see ``values`` for how Python values map to Java ones)."""
        self._write(value, 0)
        return self

    def write_raw(self, encoded: bytes) -> HessianWriter:
        """Append a value that is already encoded."""
        self._out += encoded
        return self

    def _write(self, value: object, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise HessianError(f"hessian: values nested deeper than {_MAX_DEPTH} (a value that contains itself?)")
        out = self._out
        if value is None:
            out.append(0x4E)
        elif value is True:
            out.append(0x54)
        elif value is False:
            out.append(0x46)
        elif isinstance(value, str):
            out += encode_string(value)
        elif isinstance(value, int):
            out += encode_int(value) if -(2**31) <= value < 2**31 else encode_long(value)
        elif isinstance(value, float):
            out += encode_double(value)
        elif isinstance(value, JavaLong):
            out += encode_long(value.value)
        elif isinstance(value, (bytes, bytearray)):
            out += encode_binary(bytes(value))
        elif isinstance(value, datetime):
            out += encode_date(date_millis(value))
        elif isinstance(value, JavaObject):
            self._object(value, depth)
        elif isinstance(value, TypedList):
            self._list(value.items, value.type_name, depth)
        elif isinstance(value, TypedMap):
            self._map(value.items, value.type_name, depth)
        elif isinstance(value, (list, tuple)):
            self._list(value, "", depth)
        elif isinstance(value, Mapping):
            self._map(value, "", depth)
        else:
            raise HessianError(f"hessian: cannot write a {type(value).__name__}")

    def _type(self, name: str) -> None:
        ref = self._types.get(name)
        if ref is None:
            self._types[name] = len(self._types)
            self._out += encode_string(name)
        else:
            self._out += encode_int(ref)

    def _list(self, items: object, type_name: str, depth: int) -> None:
        assert isinstance(items, (list, tuple))
        n = len(items)
        out = self._out
        if type_name:
            if n <= 7:
                out.append(0x70 + n)
                self._type(type_name)
            else:
                out.append(0x56)
                self._type(type_name)
                out += encode_int(n)
        elif n <= 7:
            out.append(0x78 + n)
        else:
            out.append(0x58)
            out += encode_int(n)
        for item in items:
            self._write(item, depth + 1)

    def _map(self, items: Mapping[object, object], type_name: str, depth: int) -> None:
        if type_name:
            self._out.append(0x4D)
            self._type(type_name)
        else:
            self._out.append(0x48)
        for k, v in items.items():
            self._write(k, depth + 1)
            self._write(v, depth + 1)
        self._out.append(0x5A)

    def _object(self, obj: JavaObject, depth: int) -> None:
        key = (obj.class_name, tuple(obj.fields))
        ref = self._classes.get(key)
        out = self._out
        if ref is None:
            ref = self._classes[key] = len(self._classes)
            out.append(0x43)
            out += encode_string(obj.class_name)
            out += encode_int(len(obj.fields))
            for name in obj.fields:
                out += encode_string(name)
        if ref <= 15:
            out.append(0x60 + ref)
        else:
            out.append(0x4F)
            out += encode_int(ref)
        for v in obj.fields.values():
            self._write(v, depth + 1)


def encode(*values: object) -> bytes:
    """``values`` written one after another as one Hessian 2.0 stream."""
    w = HessianWriter()
    for v in values:
        w.write(v)
    return w.getvalue()
