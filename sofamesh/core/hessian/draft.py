"""Hessian 2 (the draft encoding that sofa-hessian-node / hessian.js-1 ``v2`` speak) for Java objects.

Owns encoding and decoding of the values SOFARegistry's client protocol carries: Java objects
(class definition ``'O' <int len> <raw class name> <int n> <n field-name strings>`` then instance
``'o' <int ref>``), lists (``'V' ['t' u16 type] 'n' <byte> | 'l' <int32> ... 'z'``), maps
(``'M' ['t' u16 type] (key value)* 'z'`` and ``'H' ... 'z'``), strings (``[x00-x1f]`` short,
``'s'`` non-final / ``'S'`` final chunks, lengths in UTF-16 units), ints, longs, booleans, null.
These are the codes hessian.js-1's ``DecoderV2`` reads (it reads no ``0x30`` medium string, no
``'C'`` class definition). The decoder also reads the Hessian 2.0 compact codes for ints and longs.
Pure: bytes in, values out; no I/O. Shared by the SOFARegistry plugin (both ways) and the Bolt codec
(which walks sofa-rpc-node's SofaRequest bodies with ``DraftReader``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sofamesh.core.hessian.reader import HessianError
from sofamesh.core.hessian.values import JavaLong, JavaObject, TypedList
from sofamesh.core.hessian.writer import date_millis

_CHUNK = 0x8000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DEPTH = 32


# -- walking ---------------------------------------------------------------------------------------
class DraftReader:
    """A bounded cursor over the draft encoding (and the Hessian 2.0 scalars it shares): the Bolt
    codec walks sofa-rpc-node's SofaRequest bodies with it, the decoder below builds values."""


    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _Stop
        b = self.data[self.pos]
        self.pos += 1
        return b

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _Stop
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def int_(self) -> int:
        b = self.byte()
        if 0x80 <= b <= 0xBF:
            return b - 0x90
        if 0xC0 <= b <= 0xCF:
            return ((b - 0xC8) << 8) + self.byte()
        if 0xD0 <= b <= 0xD7:
            return ((b - 0xD4) << 16) + (self.byte() << 8) + self.byte()
        if b == 0x49:  # 'I'
            return int.from_bytes(self.raw(4), "big", signed=True)
        raise _Stop

    def chars(self, n: int) -> str:
        """``n`` UTF-16 code units of (CESU-style) UTF-8."""
        start = self.pos
        units = 0
        while units < n:
            b = self.byte()
            if b < 0x80:
                units += 1
            elif 0xC0 <= b < 0xE0:
                self.pos += 1
                units += 1
            elif 0xE0 <= b < 0xF0:
                self.pos += 2
                units += 1
            elif 0xF0 <= b < 0xF8:
                self.pos += 3
                units += 2
            else:
                raise _Stop
            if self.pos > self.end:
                raise _Stop
        return bytes(self.data[start : self.pos]).decode("utf-8", "surrogatepass")

    def string(self) -> str | None:
        b = self.byte()
        if b == 0x4E:  # 'N'
            return None
        if b <= 0x1F:
            return self.chars(b)
        if 0x30 <= b <= 0x33:
            return self.chars(((b - 0x30) << 8) + self.byte())
        parts: list[str] = []
        while b in (0x52, 0x73):  # 'R' / 's': non-final chunk
            parts.append(self.chars(int.from_bytes(self.raw(2), "big")))
            b = self.byte()
        if b == 0x53:  # 'S': final chunk
            parts.append(self.chars(int.from_bytes(self.raw(2), "big")))
            return "".join(parts)
        raise _Stop

    def skip_simple(self) -> None:
        """Skip one value that is a string, null, boolean or compact int (draft bodies)."""
        b = self.data[self.pos] if self.pos < self.end else -1
        if b in (0x54, 0x46):  # 'T' / 'F'
            self.pos += 1
        elif 0x80 <= b <= 0xD7 or b == 0x49:
            self.int_()
        else:
            self.string()

    def chunks(self, b: int) -> None:
        """Binary chunks after tag ``b``: u16 length + bytes each, until the final 'B' one."""
        while True:
            self.raw(int.from_bytes(self.raw(2), "big"))
            if b == 0x42:
                return
            b = self.byte()

    def class_fields(self, defs: list[int]) -> None:
        """A class definition's field count and names (its type is read): recorded in ``defs``."""
        count = self.int_()
        if not 0 <= count <= _MAX_FIELDS:
            raise _Stop
        for _ in range(count):
            self.string()
        defs.append(count)

    def instance(self, ref: int, defs: list[int], depth: int, skip: Callable[[list[int], int], None]) -> None:
        """An object of class definition ``ref``: one value per field."""
        if not 0 <= ref < len(defs):
            raise _Stop
        for _ in range(defs[ref]):
            skip(defs, depth + 1)

    def skip_draft(self, defs: list[int], depth: int = 0) -> None:
        """Skip one value of the draft encoding sofa-rpc-node (hessian.js) writes: 'O' class
        definitions with 'o' instances, 'V' lists and 'M' maps ('t' typed, 'l' / 'n' sized) ended by
        'z', with 2.0's compact strings and numbers inside. Bounded by ``_MAX_WALK_DEPTH``."""
        if depth > _MAX_WALK_DEPTH:
            raise _Stop
        b = self.byte()
        fixed = _FIXED_SIZE.get(b)
        if fixed is not None and b not in (0x4C, 0x44, 0x4A, 0x4B):
            self.pos += fixed
            if self.pos > self.end:
                raise _Stop
        elif b in (0x4C, 0x44, 0x64):  # 'L' long, 'D' double, 'd' date: 8 bytes
            self.raw(8)
        elif b <= 0x1F or 0x30 <= b <= 0x33 or b in (0x53, 0x73):  # strings ('R' is a reference here)
            self.pos -= 1
            self.string()
        elif b in (0x42, 0x62):  # binary chunks 'b' (non-final) / 'B' (final)
            self.chunks(b)
        elif b == 0x4F:  # 'O' class definition: type, field count, field names; then the value
            self.raw(self.int_())
            self.class_fields(defs)
            self.skip_draft(defs, depth)
        elif b == 0x6F:  # 'o' instance of a class definition
            self.instance(self.int_(), defs, depth, self.skip_draft)
        elif b in (0x56, 0x4D):  # 'V' list / 'M' map, until 'z'
            nxt = self.data[self.pos] if self.pos < self.end else -1
            if nxt == 0x74:  # 't' + u16 length + type
                self.pos += 1
                self.raw(int.from_bytes(self.raw(2), "big"))
                nxt = self.data[self.pos] if self.pos < self.end else -1
            if b == 0x56 and nxt == 0x6C:  # 'l' + int32 length
                self.raw(5)
            elif b == 0x56 and nxt == 0x6E:  # 'n' + byte length
                self.raw(2)
            per_entry = 2 if b == 0x4D else 1
            for _ in range(_MAX_ITEMS):
                if self.pos < self.end and self.data[self.pos] == 0x7A:  # 'z'
                    self.pos += 1
                    return
                for _ in range(per_entry):
                    self.skip_draft(defs, depth + 1)
            raise _Stop
        else:
            raise _Stop


# Hessian 2.0 scalars by leading byte: bytes that follow it.
_FIXED_SIZE: dict[int, int] = {
    0x4E: 0, 0x54: 0, 0x46: 0,  # null, true, false
    0x49: 4, 0x4C: 8, 0x59: 4, 0x44: 8, 0x4A: 8, 0x4B: 4,  # int, long, long32, double, dates
    0x5B: 0, 0x5C: 0, 0x5D: 1, 0x5E: 2, 0x5F: 4,  # compact doubles
    **{b: 0 for b in range(0x80, 0xC0)}, **{b: 1 for b in range(0xC0, 0xD0)},  # compact ints
    **{b: 2 for b in range(0xD0, 0xD8)},
    **{b: 0 for b in range(0xD8, 0xF0)}, **{b: 1 for b in range(0xF0, 0x100)},  # compact longs
    **{b: 2 for b in range(0x38, 0x40)},
}
_MAX_WALK_DEPTH = 16  # DraftReader.skip_draft: SofaRequest bodies are shallow
_MAX_FIELDS = 64  # fields of one class definition
_MAX_ITEMS = 4096


class _Stop(HessianError):
    """The body is not what this reader understands."""


# -- encoding -------------------------------------------------------------------------------------
class Encoder:
    """Writes one message; class definitions are written once per message and then referenced."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._classes: dict[tuple[str, tuple[str, ...]], int] = {}

    def getvalue(self) -> bytes:
        return bytes(self.out)

    def write(self, value: Any) -> Encoder:
        out = self.out
        if value is None:
            out += b"N"
        elif value is True:
            out += b"T"
        elif value is False:
            out += b"F"
        elif isinstance(value, JavaLong):
            self._long(value.value)
        elif isinstance(value, int):
            self._int(value)
        elif isinstance(value, str):
            self._string(value)
        elif isinstance(value, float):
            out += b"D" + struct.pack(">d", value)
        elif isinstance(value, (bytes, bytearray)):
            self._binary(bytes(value))
        elif isinstance(value, datetime):
            out += b"d" + struct.pack(">q", date_millis(value))
        elif isinstance(value, JavaObject):
            self._object(value)
        elif isinstance(value, TypedList):
            self._list(value.items, value.type_name)
        elif isinstance(value, Mapping):
            out += b"M"
            for k, v in value.items():
                self.write(k)
                self.write(v)
            out += b"z"
        elif isinstance(value, (list, tuple)):
            self._list(value, "")
        else:
            raise HessianError(f"cannot write a {type(value).__name__} as hessian")
        return self

    def _int(self, v: int) -> None:
        if -16 <= v <= 47:
            self.out.append(0x90 + v)
        elif -2048 <= v <= 2047:
            self.out += bytes((0xC8 + (v >> 8), v & 0xFF))
        elif -262144 <= v <= 262143:
            self.out += bytes((0xD4 + (v >> 16), (v >> 8) & 0xFF, v & 0xFF))
        elif -(2**31) <= v < 2**31:
            self.out += b"I" + struct.pack(">i", v)
        else:
            raise HessianError(f"{v} does not fit a Java int (use JavaLong)")

    def _long(self, v: int) -> None:
        if -8 <= v <= 15:
            self.out.append(0xE0 + v)
        elif -2048 <= v <= 2047:
            self.out += bytes((0xF8 + (v >> 8), v & 0xFF))
        elif -262144 <= v <= 262143:
            self.out += bytes((0x3C + (v >> 16), (v >> 8) & 0xFF, v & 0xFF))
        elif -(2**31) <= v < 2**31:
            self.out += b"\x77" + struct.pack(">i", v)
        elif -(2**63) <= v < 2**63:
            self.out += b"L" + struct.pack(">q", v)
        else:
            raise HessianError(f"{v} does not fit a Java long")

    def _string(self, s: str) -> None:
        # Lengths count UTF-16 code units: encode as UTF-16 to cut chunks without splitting pairs.
        units = s.encode("utf-16-be", "surrogatepass")
        n = len(units) // 2
        if n <= 0x1F:
            self.out.append(n)
            self.out += _cesu8(s)
            return
        pos = 0
        while n - pos > _CHUNK:
            end = pos + _CHUNK
            if 0xD8 <= units[2 * end - 2] <= 0xDB:  # never end a chunk on a high surrogate
                end -= 1
            self.out += b"s" + struct.pack(">H", end - pos)
            self.out += _cesu8(units[2 * pos : 2 * end].decode("utf-16-be", "surrogatepass"))
            pos = end
        self.out += b"S" + struct.pack(">H", n - pos)
        self.out += _cesu8(units[2 * pos :].decode("utf-16-be", "surrogatepass"))

    def _binary(self, data: bytes) -> None:
        """'b' non-final chunks of 0x8000 bytes, then a final 'B' chunk (u16 lengths)."""
        pos = 0
        while len(data) - pos > _CHUNK:
            self.out += b"b" + struct.pack(">H", _CHUNK) + data[pos : pos + _CHUNK]
            pos += _CHUNK
        self.out += b"B" + struct.pack(">H", len(data) - pos) + data[pos:]

    def _list(self, items: Sequence[Any], type_name: str) -> None:
        self.out += b"V"
        if type_name:
            raw = type_name.encode()
            self.out += b"t" + struct.pack(">H", len(raw)) + raw
        if len(items) <= 0xFF:
            self.out += b"n" + bytes((len(items),))
        else:
            self.out += b"l" + struct.pack(">I", len(items))
        for item in items:
            self.write(item)
        self.out += b"z"

    def _object(self, obj: JavaObject) -> None:
        key = (obj.class_name, tuple(obj.fields))
        ref = self._classes.get(key)
        if ref is None:
            ref = self._classes[key] = len(self._classes)
            raw = obj.class_name.encode()
            self.out += b"O"
            self._int(len(raw))
            self.out += raw
            self._int(len(obj.fields))
            for name in obj.fields:
                self._string(name)
        self.out += b"o"
        self._int(ref)
        for v in obj.fields.values():
            self.write(v)


def _cesu8(s: str) -> bytes:
    """UTF-8 with supplementary characters as two 3-byte surrogates, as Java writes them."""
    return s.encode() if s.isascii() else _cesu8_slow(s)


def _cesu8_slow(s: str) -> bytes:
    out = bytearray()
    for c in s:
        cp = ord(c)
        if cp > 0xFFFF:
            cp -= 0x10000
            for unit in (0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)):
                out += chr(unit).encode("utf-8", "surrogatepass")
        else:
            out += c.encode("utf-8", "surrogatepass")
    return bytes(out)


def encode(value: Any) -> bytes:
    """``value`` as one Hessian message (class definitions numbered from 0)."""
    return Encoder().write(value).getvalue()


# -- decoding -------------------------------------------------------------------------------------
class _Decoder(DraftReader):
    """Reads whole values; the byte, int and string primitives are the Bolt plugin's bounded reader's."""

    __slots__ = ("classes", "refs", "types")

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.classes: list[tuple[str, list[str]]] = []
        self.types: list[str] = []
        self.refs: list[Any] = []

    def text(self, n: int) -> str:
        """``n`` UTF-16 units, with CESU-8 surrogate pairs joined back into characters."""
        return self.chars(n).encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")

    def type_(self) -> str:
        b = self.data[self.pos] if self.pos < len(self.data) else -1
        if b == 0x74:  # 't'
            self.pos += 1
            name = self.raw(int(struct.unpack(">H", self.raw(2))[0])).decode()
            self.types.append(name)
            return name
        if b in (0x54, 0x75):  # type ref
            self.pos += 1
            ref = self.int_()
            if not 0 <= ref < len(self.types):
                raise HessianError(f"unknown type ref {ref}")
            return self.types[ref]
        return ""

    def chunked(self, b: int, more: int, final: int, what: str, part: Callable[[int], Any]) -> list[Any]:
        """Chunks from tag ``b``: ``more`` ones, then the ``final`` one; u16 lengths, ``part`` reads each."""
        parts = []
        while b == more:
            parts.append(part(int(struct.unpack(">H", self.raw(2))[0])))
            b = self.byte()
        if b != final:
            raise HessianError(f"expected a final {what} chunk, got 0x{b:02x}")
        parts.append(part(int(struct.unpack(">H", self.raw(2))[0])))
        return parts

    def read(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise HessianError("hessian value nested too deep")
        b = self.byte()
        if b == 0x4E:
            return None
        if b == 0x54:
            return True
        if b == 0x46:
            return False
        if 0x80 <= b <= 0xD7 or b == 0x49:
            self.pos -= 1
            return self.int_()
        if 0xD8 <= b <= 0xEF:
            return b - 0xE0
        if 0xF0 <= b <= 0xFF:
            return ((b - 0xF8) << 8) + self.byte()
        if 0x38 <= b <= 0x3F:
            return ((b - 0x3C) << 16) + (self.byte() << 8) + self.byte()
        if b in (0x77, 0x59):
            return int(struct.unpack(">i", self.raw(4))[0])
        if b == 0x44:  # 'D' double
            return float(struct.unpack(">d", self.raw(8))[0])
        if b == 0x64:  # 'd' date: milliseconds since the epoch
            return _EPOCH + timedelta(milliseconds=int(struct.unpack(">q", self.raw(8))[0]))
        if b in (0x62, 0x42):  # binary: 'b' non-final chunks, then 'B'
            return b"".join(self.chunked(b, 0x62, 0x42, "binary", self.raw))
        if b == 0x4C:
            return int(struct.unpack(">q", self.raw(8))[0])
        if b <= 0x1F:
            return self.text(b)
        if b in (0x73, 0x53):  # string: 's' non-final chunks, then 'S'
            return "".join(self.chunked(b, 0x73, 0x53, "string", self.text))
        if b == 0x4F:  # 'O' class definition, then the instance that follows
            name = self.raw(self.int_()).decode()
            count = self.int_()
            names = []
            for _ in range(count):
                n = self.read(depth + 1)
                if not isinstance(n, str):
                    raise HessianError("class field name is not a string")
                names.append(n)
            self.classes.append((name, names))
            return self.read(depth)
        if b == 0x6F:  # 'o' instance
            ref = self.int_()
            if not 0 <= ref < len(self.classes):
                raise HessianError(f"unknown class ref {ref}")
            name, names = self.classes[ref]
            obj = JavaObject(name)
            self.refs.append(obj)
            for n in names:
                obj.fields[n] = self.read(depth + 1)
            return obj
        if b in (0x56, 0x76):  # 'V' list / 'v' typed fixed list
            items: list[Any] = []
            self.refs.append(items)
            if b == 0x56:
                self.type_()
                code = self.byte()
                if code == 0x6E:
                    length = self.byte()
                elif code == 0x6C:
                    length = int(struct.unpack(">I", self.raw(4))[0])
                else:
                    self.pos -= 1
                    length = -1
            else:
                self.int_()
                length = self.int_()
            if length >= 0:
                if length > len(self.data) - self.pos:
                    raise HessianError("list longer than the message")
                items.extend(self.read(depth + 1) for _ in range(length))
            else:
                while self.pos < len(self.data) and self.data[self.pos] != 0x7A:
                    items.append(self.read(depth + 1))
            if b == 0x56:
                if self.byte() != 0x7A:
                    raise HessianError("list does not end with 'z'")
            return items
        if b in (0x4D, 0x48):  # 'M' typed map / 'H' hash map
            if b == 0x4D:
                self.type_()
            out: dict[Any, Any] = {}
            self.refs.append(out)
            while True:
                if self.pos >= len(self.data):
                    raise HessianError("truncated map")
                if self.data[self.pos] == 0x7A:
                    self.pos += 1
                    return out
                k = self.read(depth + 1)
                out[k if isinstance(k, (str, int, bool)) or k is None else repr(k)] = self.read(depth + 1)
        if b in (0x4A, 0x4B, 0x52):  # refs
            ref = self.byte() if b == 0x4A else (
                int(struct.unpack(">H", self.raw(2))[0]) if b == 0x4B else int(struct.unpack(">I", self.raw(4))[0]))
            if not 0 <= ref < len(self.refs):
                raise HessianError(f"unknown ref {ref}")
            return self.refs[ref]
        raise HessianError(f"unsupported hessian code 0x{b:02x}")


def decode(data: bytes) -> Any:
    """The first value of a Hessian message; objects come back as :class:`JavaObject`."""
    try:
        return _Decoder(bytes(data)).read()
    except _Stop as exc:
        raise HessianError("truncated or unreadable hessian value") from exc
    except UnicodeDecodeError as bad:
        raise HessianError(f"bad UTF-8 in a hessian string: {bad}") from bad


__all__ = ["DraftReader", "Encoder", "decode", "encode"]
