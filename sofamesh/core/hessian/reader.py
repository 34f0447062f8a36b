"""Hessian 2.0 reader: reads strings, ints and string maps for routing, skips any other value, and
decodes whole values where decoding them is the point (``read``: the transcoder, registries).

Pure: bytes in, Python values out. No sockets, no event loop, no logging. The routing reads never
build the objects a body carries: a value the router does not need is skipped by walking its
encoding, which is how the Dubbo ``group`` attachment (after every argument) is reached without
decoding arguments.

Follows the Hessian 2.0 serialization grammar (compact/medium/chunked strings, compact ints and
longs, the five double forms, both date forms, chunked binary, typed and untyped lists and maps,
class definitions ``C`` with instances ``O``/``0x60-0x6f``, value references ``Q``). String lengths
count UTF-16 code units: a supplementary character is two units, written as two 3-byte surrogates
(CESU-8) by Java and JavaScript writers; a 4-byte UTF-8 sequence is accepted as two units too.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Final

from sofamesh.core.hessian.values import JavaObject, TypedList, TypedMap

__all__ = ["HIGH_SURROGATE_MAX", "HIGH_SURROGATE_MIN", "HessianError", "HessianReader", "is_structured_tag"]


class HessianError(ValueError):
    """The bytes are not the Hessian 2.0 value the reader expected. The message names the offset."""


_MAX_DEPTH: Final = 64  # nesting of lists/maps/objects; real Dubbo arguments are a few levels deep

_Z: Final = 0x5A  # list/map terminator
_DOUBLE: Final = struct.Struct(">d")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# UTF-16 surrogate bounds, spelled with chr(): mypyc cannot compile surrogates in string literals.
HIGH_SURROGATE_MIN: Final = chr(0xD800)
HIGH_SURROGATE_MAX: Final = chr(0xDBFF)
LOW_SURROGATE_MAX: Final = chr(0xDFFF)

# Fixed extra length (bytes after the tag) of scalar tags; filled below.
_FIXED: Final[dict[int, int]] = {}
for _t in range(0x38, 0x40):  # three-octet compact long
    _FIXED[_t] = 2
for _t, _n in (
    (0x44, 8),
    (0x46, 0),
    (0x49, 4),
    (0x4A, 8),
    (0x4B, 4),
    (0x4C, 8),
    (0x4E, 0),
    (0x54, 0),
    (0x59, 4),
    (0x5B, 0),
    (0x5C, 0),
    (0x5D, 1),
    (0x5E, 2),
    (0x5F, 4),
):
    _FIXED[_t] = _n
for _t in range(0x80, 0xC0):  # one-octet compact int
    _FIXED[_t] = 0
for _t in range(0xC0, 0xD0):  # two-octet compact int
    _FIXED[_t] = 1
for _t in range(0xD0, 0xD8):  # three-octet compact int
    _FIXED[_t] = 2
for _t in range(0xD8, 0xF0):  # one-octet compact long
    _FIXED[_t] = 0
for _t in range(0xF0, 0x100):  # two-octet compact long
    _FIXED[_t] = 1
del _t, _n


def _is_string_tag(tag: int) -> bool:
    return tag <= 0x1F or 0x30 <= tag <= 0x33 or tag == 0x52 or tag == 0x53


def is_structured_tag(tag: int) -> bool:
    """Whether a value starting with ``tag`` is a map, list or object (or a class definition): a
    value later ``Q`` references may count, so it cannot be dropped from a stream by itself."""
    return tag in (0x43, 0x48, 0x4D, 0x4F) or 0x55 <= tag <= 0x58 or 0x60 <= tag <= 0x7F


def _is_int_tag(tag: int) -> bool:
    return 0x80 <= tag <= 0xD7 or tag == 0x49


class HessianReader:
    """A cursor over one Hessian 2.0 stream (for Dubbo: one message body).

    Class definitions seen while reading or skipping are remembered, because later instances refer
    to them by index (Java's ``Hessian2Output`` shares definitions across a whole body).
    """

    __slots__ = ("_classdefs", "_data", "_end", "_pos", "_refs", "_types")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = pos
        self._end = len(data) if end is None else end
        self._classdefs: list[tuple[str, list[str]]] = []  # (class name, field names) by index
        self._types: list[str] = []  # list/map type names read by ``read``, by index
        self._refs: list[object] = []  # lists, maps and objects read by ``read``, for ``Q``

    @property
    def pos(self) -> int:
        """Offset of the next unread byte in ``data``."""
        return self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def peek_tag(self) -> int:
        """The next tag byte, not consumed."""
        if self._pos >= self._end:
            raise HessianError(f"hessian: value expected at offset {self._pos}, found end of data")
        return self._data[self._pos]

    # -- primitives -------------------------------------------------------------------------------
    def _byte(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise HessianError(f"hessian: truncated at offset {pos}")
        self._pos = pos + 1
        return self._data[pos]

    def _advance(self, n: int) -> None:
        if n < 0 or self._pos + n > self._end:
            raise HessianError(f"hessian: {n} bytes expected at offset {self._pos}, {self._end - self._pos} available")
        self._pos += n

    def _u16(self) -> int:
        pos = self._pos
        if pos + 2 > self._end:
            raise HessianError(f"hessian: truncated chunk length at offset {pos}")
        self._pos = pos + 2
        return (self._data[pos] << 8) | self._data[pos + 1]

    def _utf8_span(self, units: int) -> int:
        """Advance over ``units`` UTF-16 code units of UTF-8/CESU-8; return the start offset."""
        data, start, end = self._data, self._pos, self._end
        stop = start + units
        if stop <= end and data[start:stop].isascii():
            self._pos = stop
            return start
        pos = start
        while units > 0:
            if pos >= end:
                raise HessianError(f"hessian: string truncated at offset {pos} ({units} chars missing)")
            b = data[pos]
            if b < 0x80:
                pos += 1
            elif b & 0xE0 == 0xC0:
                pos += 2
            elif b & 0xF0 == 0xE0:
                pos += 3
            elif b & 0xF8 == 0xF0 and units >= 2:
                pos += 4
                units -= 1
            else:
                raise HessianError(f"hessian: bad UTF-8 lead byte 0x{b:02x} at offset {pos}")
            units -= 1
        if pos > end:
            raise HessianError(f"hessian: string truncated at offset {end}")
        self._pos = pos
        return start

    def _decode(self, start: int) -> str:
        raw = self._data[start : self._pos]
        if raw.isascii():
            return raw.decode("ascii")
        try:
            text = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise HessianError(f"hessian: invalid UTF-8 in string at offset {start}: {exc.reason}") from None
        if any(HIGH_SURROGATE_MIN <= c <= LOW_SURROGATE_MAX for c in text):
            # CESU-8 surrogate pairs -> supplementary characters; lone surrogates stay as they are.
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return text

    # -- strings ----------------------------------------------------------------------------------
    def _string_after_tag(self, tag: int, keep: bool) -> str | None:
        parts: list[str] = []
        first = True
        while True:
            if tag <= 0x1F:
                units, final = tag, True
            elif 0x30 <= tag <= 0x33:
                units, final = ((tag - 0x30) << 8) | self._byte(), True
            elif tag == 0x53:  # 'S'
                units, final = self._u16(), True
            elif tag == 0x52 or (tag == 0x73 and not first):  # 'R' ('s' from Hessian 1 writers)
                units, final = self._u16(), False
            else:
                raise HessianError(f"hessian: string chunk expected at offset {self._pos - 1}, found tag 0x{tag:02x}")
            start = self._utf8_span(units)
            if keep:
                parts.append(self._decode(start))
            if final:
                return "".join(parts) if keep else None
            first = False
            tag = self._byte()

    def read_string(self) -> str:
        """Read a string value (any of its forms)."""
        data, pos = self._data, self._pos
        if pos < self._end and data[pos] < 0x20:  # fast path: a short ASCII string (routing names)
            stop = pos + 1 + data[pos]
            if stop <= self._end:
                raw = data[pos + 1 : stop]
                if raw.isascii():
                    self._pos = stop
                    return raw.decode("ascii")
        tag = self._byte()
        if not _is_string_tag(tag):
            raise HessianError(f"hessian: string expected at offset {self._pos - 1}, found tag 0x{tag:02x}")
        s = self._string_after_tag(tag, True)
        assert s is not None
        return s

    def read_string_or_null(self) -> str | None:
        """Read a string value or ``N`` (null)."""
        if self.peek_tag() == 0x4E:
            self._pos += 1
            return None
        return self.read_string()

    def read_int(self) -> int:
        """Read a 32-bit int value (compact or ``I``)."""
        tag = self._byte()
        return self._int_after_tag(tag)

    def _int_after_tag(self, tag: int) -> int:
        if 0x80 <= tag <= 0xBF:
            return tag - 0x90
        if 0xC0 <= tag <= 0xCF:
            return ((tag - 0xC8) << 8) | self._byte()
        if 0xD0 <= tag <= 0xD7:
            hi = self._byte()
            return ((tag - 0xD4) << 16) | (hi << 8) | self._byte()
        if tag == 0x49:
            start = self._pos
            self._advance(4)
            return int.from_bytes(self._data[start : start + 4], "big", signed=True)
        raise HessianError(f"hessian: int expected at offset {self._pos - 1}, found tag 0x{tag:02x}")

    def read_scalar_text(self) -> str | None:
        """A string, int or boolean value as text; ``None`` for null or any other value (skipped)."""
        tag = self.peek_tag()
        if _is_string_tag(tag):
            return self.read_string()
        if _is_int_tag(tag):
            return str(self.read_int())
        if tag == 0x54 or tag == 0x46:
            self._pos += 1
            return "true" if tag == 0x54 else "false"
        self.skip()
        return None

    def read_string_map(self, max_entries: int = 1024) -> dict[str, str]:
        """Read a map (``H`` or typed ``M``) whose keys are strings. Values that are strings, ints
        or booleans are kept as text; entries with other keys or values are skipped."""
        tag = self._byte()
        if tag == 0x4D:
            self._skip_type()
        elif tag != 0x48:
            raise HessianError(f"hessian: map expected at offset {self._pos - 1}, found tag 0x{tag:02x}")
        out: dict[str, str] = {}
        entries = 0
        while self.peek_tag() != _Z:
            entries += 1
            if entries > max_entries:
                raise HessianError(f"hessian: map at offset {self._pos} has more than {max_entries} entries")
            if _is_string_tag(self.peek_tag()):
                key = self.read_string()
                value = self.read_scalar_text()
                if value is not None:
                    out[key] = value
            else:
                self.skip()
                self.skip()
        self._pos += 1
        return out

    def read_map_entries(self) -> tuple[int, list[tuple[str | None, bytes, int]]]:
        """Walk a map (``H`` or typed ``M``) without decoding its values: where its entries start,
        and each entry as (key, or None when the key is not a string; the entry's bytes, key and
        value as written; the value's first tag). The reader ends past the map's ``Z``."""
        tag = self._byte()
        if tag == 0x4D:
            self._skip_type()
        elif tag != 0x48:
            raise HessianError(f"hessian: map expected at offset {self._pos - 1}, found tag 0x{tag:02x}")
        first = self._pos
        data = self._data
        out: list[tuple[str | None, bytes, int]] = []
        while self.peek_tag() != _Z:
            start = self._pos
            key: str | None = None
            if _is_string_tag(self.peek_tag()):
                key = self.read_string()
            else:
                self.skip()
            value_tag = self.peek_tag()
            self.skip()
            out.append((key, bytes(data[start : self._pos]), value_tag))
        self._pos += 1
        return first, out

    def _class_definition(self) -> None:
        """The rest of a ``C`` class definition: remembered for the instances that refer to it."""
        name = self.read_string()
        count = self.read_int()
        if count < 0:
            raise HessianError(f"hessian: negative field count {count} before offset {self._pos}")
        self._classdefs.append((name, [self.read_string() for _ in range(count)]))

    def read_instance_head(self) -> tuple[str, list[str]]:
        """Start reading an object (``O`` or compact instance, after any class definitions): its
        class name and field names; the reader is left at the first field's value, so a caller
        reads or skips just the fields it wants."""
        tag = self._byte()
        while tag == 0x43:
            self._class_definition()
            tag = self._byte()
        if tag == 0x4F:
            index = self.read_int()
        elif 0x60 <= tag <= 0x6F:
            index = tag - 0x60
        else:
            raise HessianError(f"hessian: object expected at offset {self._pos - 1}, found tag 0x{tag:02x}")
        self._fields(index)
        return self._classdefs[index]

    # -- whole values -----------------------------------------------------------------------------
    def read(self) -> object:
        """Read one value of any type, decoded: None, bool, int (ints and longs), float, str, bytes,
        datetime (UTC), list, dict, ``TypedList`` / ``TypedMap`` (when written with a type name) and
        ``JavaObject``. ``Q`` references count only values read by this method (not skipped ones)."""
        return self._read(0)

    def _type_name(self) -> str:
        tag = self.peek_tag()
        if _is_string_tag(tag):
            name = self.read_string()
            self._types.append(name)
            return name
        index = self.read_int()
        if not 0 <= index < len(self._types):
            raise HessianError(
                f"hessian: type reference {index} before offset {self._pos}, only {len(self._types)} types read"
            )
        return self._types[index]

    def _bytes(self, n: int) -> bytes:
        start = self._pos
        self._advance(n)
        return bytes(self._data[start : start + n])

    def _long_after_tag(self, tag: int) -> int:
        if 0xD8 <= tag <= 0xEF:
            return tag - 0xE0
        if 0xF0 <= tag <= 0xFF:
            return ((tag - 0xF8) << 8) | self._byte()
        if 0x38 <= tag <= 0x3F:
            hi = self._byte()
            return ((tag - 0x3C) << 16) | (hi << 8) | self._byte()
        n = 4 if tag == 0x59 else 8
        return int.from_bytes(self._bytes(n), "big", signed=True)

    def _read_list(self, items: list[object], n: int, depth: int) -> None:
        if n < 0 or n > self._end - self._pos:
            raise HessianError(f"hessian: list of {n} items before offset {self._pos} is longer than the data")
        for _ in range(n):
            items.append(self._read(depth))

    def _read_until_z(self, items: list[object], depth: int) -> None:
        while self.peek_tag() != _Z:
            items.append(self._read(depth))
        self._pos += 1

    def _read(self, depth: int) -> object:
        if depth > _MAX_DEPTH:
            raise HessianError(f"hessian: values nested deeper than {_MAX_DEPTH} at offset {self._pos}")
        tag = self.peek_tag()
        if _is_string_tag(tag):
            return self.read_string()
        self._pos += 1
        if tag == 0x4E:
            return None
        if tag == 0x54:
            return True
        if tag == 0x46:
            return False
        if _is_int_tag(tag):
            return self._int_after_tag(tag)
        if 0xD8 <= tag <= 0xFF or 0x38 <= tag <= 0x3F or tag == 0x59 or tag == 0x4C:
            return self._long_after_tag(tag)
        if tag == 0x5B:
            return 0.0
        if tag == 0x5C:
            return 1.0
        if tag == 0x5D:
            return float(int.from_bytes(self._bytes(1), "big", signed=True))
        if tag == 0x5E:
            return float(int.from_bytes(self._bytes(2), "big", signed=True))
        if tag == 0x5F:
            return int.from_bytes(self._bytes(4), "big", signed=True) * 0.001
        if tag == 0x44:
            return float(_DOUBLE.unpack(self._bytes(8))[0])
        if tag == 0x4A or tag == 0x4B:
            millis = (
                int.from_bytes(self._bytes(8), "big", signed=True)
                if tag == 0x4A
                else (int.from_bytes(self._bytes(4), "big", signed=True) * 60000)
            )
            try:
                return _EPOCH + timedelta(milliseconds=millis)
            except OverflowError:
                raise HessianError(
                    f"hessian: date {millis} ms before offset {self._pos} is out of the range Python dates hold"
                ) from None
        if 0x20 <= tag <= 0x2F:
            return self._bytes(tag - 0x20)
        if 0x34 <= tag <= 0x37:
            return self._bytes(((tag - 0x34) << 8) | self._byte())
        if tag == 0x41 or tag == 0x42:
            parts: list[bytes] = []
            while tag == 0x41:
                parts.append(self._bytes(self._u16()))
                tag = self._byte()
            if tag == 0x42:
                parts.append(self._bytes(self._u16()))
            elif 0x20 <= tag <= 0x2F:
                parts.append(self._bytes(tag - 0x20))
            elif 0x34 <= tag <= 0x37:
                parts.append(self._bytes(((tag - 0x34) << 8) | self._byte()))
            else:
                raise HessianError(f"hessian: binary chunk expected at offset {self._pos - 1}, found tag 0x{tag:02x}")
            return b"".join(parts)
        inner = depth + 1
        if tag == 0x43:
            self._class_definition()
            return self._read(depth)
        if tag == 0x4F or 0x60 <= tag <= 0x6F:
            index = self.read_int() if tag == 0x4F else tag - 0x60
            self._fields(index)
            name, fields = self._classdefs[index]
            obj = JavaObject(name)
            self._refs.append(obj)
            for field_name in fields:
                obj.fields[field_name] = self._read(inner)
            return obj
        if tag == 0x48 or tag == 0x4D:
            type_name = self._type_name() if tag == 0x4D else ""
            out: dict[object, object] = {}
            self._refs.append(TypedMap(out, type_name) if type_name else out)
            ref = len(self._refs) - 1
            while self.peek_tag() != _Z:
                key = self._read(inner)
                try:
                    out[key] = self._read(inner)
                except TypeError:
                    raise HessianError(
                        f"hessian: map key of type {type(key).__name__} before offset "
                        f"{self._pos} cannot be a Python dict key"
                    ) from None
            self._pos += 1
            return self._refs[ref]
        if tag == 0x51:
            index = self.read_int()
            if not 0 <= index < len(self._refs):
                raise HessianError(
                    f"hessian: reference {index} before offset {self._pos}, only {len(self._refs)} values read"
                )
            return self._refs[index]
        if 0x55 <= tag <= 0x58 or 0x70 <= tag <= 0x7F:
            typed = tag == 0x55 or tag == 0x56 or 0x70 <= tag <= 0x77
            type_name = self._type_name() if typed else ""
            items: list[object] = []
            self._refs.append(TypedList(items, type_name) if type_name else items)
            ref = len(self._refs) - 1
            if tag == 0x55 or tag == 0x57:
                self._read_until_z(items, inner)
            elif tag == 0x56 or tag == 0x58:
                self._read_list(items, self.read_int(), inner)
            else:
                self._read_list(items, (tag - 0x70) & 7, inner)
            return self._refs[ref]
        raise HessianError(f"hessian: unexpected tag 0x{tag:02x} at offset {self._pos - 1}")

    # -- skipping ---------------------------------------------------------------------------------
    def skip(self) -> None:
        """Skip one complete value of any type (with the class definitions that precede it)."""
        self._skip(0)

    def _skip_type(self) -> None:
        tag = self._byte()
        if _is_string_tag(tag):
            self._string_after_tag(tag, False)
        else:
            self._int_after_tag(tag)

    def _skip_until_z(self, depth: int, pairs: bool) -> None:
        while self.peek_tag() != _Z:
            self._skip(depth)
            if pairs:
                self._skip(depth)
        self._pos += 1

    def _skip_n(self, n: int, depth: int) -> None:
        if n < 0:
            raise HessianError(f"hessian: negative length {n} before offset {self._pos}")
        for _ in range(n):
            self._skip(depth)

    def _fields(self, index: int) -> int:
        if not 0 <= index < len(self._classdefs):
            raise HessianError(
                f"hessian: object refers to class definition {index} before offset "
                f"{self._pos}, only {len(self._classdefs)} defined"
            )
        return len(self._classdefs[index][1])

    def _skip(self, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise HessianError(f"hessian: values nested deeper than {_MAX_DEPTH} at offset {self._pos}")
        tag = self._byte()
        if tag <= 0x1F:  # compact string, the commonest value in Dubbo bodies
            self._utf8_span(tag)
            return
        while tag == 0x43:  # 'C' class definition: type name, field count, field names; then a value
            self._class_definition()
            tag = self._byte()
        extra = _FIXED.get(tag)
        if extra is not None:
            self._advance(extra)
            return
        inner = depth + 1
        if _is_string_tag(tag):
            self._string_after_tag(tag, False)
        elif 0x20 <= tag <= 0x2F:  # compact binary
            self._advance(tag - 0x20)
        elif 0x34 <= tag <= 0x37:  # medium binary
            self._advance(((tag - 0x34) << 8) | self._byte())
        elif tag == 0x41 or tag == 0x42:  # binary chunks 'A'... then a final chunk
            while tag == 0x41:
                self._advance(self._u16())
                tag = self._byte()
            if tag == 0x42:
                self._advance(self._u16())
            elif 0x20 <= tag <= 0x2F:
                self._advance(tag - 0x20)
            elif 0x34 <= tag <= 0x37:
                self._advance(((tag - 0x34) << 8) | self._byte())
            else:
                raise HessianError(f"hessian: binary chunk expected at offset {self._pos - 1}, found tag 0x{tag:02x}")
        elif tag == 0x48:  # 'H' untyped map
            self._skip_until_z(inner, pairs=True)
        elif tag == 0x4D:  # 'M' typed map
            self._skip_type()
            self._skip_until_z(inner, pairs=True)
        elif tag == 0x4F:  # 'O' instance of a defined class
            self._skip_n(self._fields(self.read_int()), inner)
        elif 0x60 <= tag <= 0x6F:  # compact instance
            self._skip_n(self._fields(tag - 0x60), inner)
        elif tag == 0x51:  # 'Q' reference
            self.read_int()
        elif tag == 0x55:  # 'U' variable-length typed list
            self._skip_type()
            self._skip_until_z(inner, pairs=False)
        elif tag == 0x56:  # 'V' fixed-length typed list
            self._skip_type()
            self._skip_n(self.read_int(), inner)
        elif tag == 0x57:  # 'W' variable-length untyped list
            self._skip_until_z(inner, pairs=False)
        elif tag == 0x58:  # 'X' fixed-length untyped list
            self._skip_n(self.read_int(), inner)
        elif 0x70 <= tag <= 0x77:  # compact fixed typed list
            self._skip_type()
            self._skip_n(tag - 0x70, inner)
        elif 0x78 <= tag <= 0x7F:  # compact fixed untyped list
            self._skip_n(tag - 0x78, inner)
        else:
            raise HessianError(f"hessian: unexpected tag 0x{tag:02x} at offset {self._pos - 1}")
