"""Reads the method name out of a hessian2 ``SofaRequest`` body, and nothing else.

Used only when a route matches on ``method`` and the request carries no ``sofa_head_method_name``
header (sofa-rpc-node with hessian sends only ``service``). Reads the class definition and the
field names, skips the values of the fields before ``methodName`` (any Hessian 2.0 value; strings,
nulls, booleans and ints in the draft encoding) and never reaches the arguments. Pure and bounded:
it stops at the end of the content, at a nesting depth and item count limit, and gives up
(``None``) on any encoding it does not expect.

Two object encodings are accepted (PROTOCOLS.md section 4 and 9):
- Hessian 2.0: ``'C' <string type> <int n> <n strings>`` then ``'O' <int ref>`` or ``0x60+ref``;
- the older draft sofa-hessian-node writes: ``'O' <int len> <type bytes> <int n> <n strings>``
  then ``'o' <int ref>``.
"""

from __future__ import annotations

from collections.abc import Callable

METHOD_FIELD = "methodName"
_MAX_FIELDS = 64


class _Reader:
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

    def skip_value(self, defs: list[int], depth: int = 0) -> None:
        """Skip one Hessian 2.0 value of any kind (scalars, strings, binary, lists, maps, objects,
        refs), recording class definitions in ``defs`` (field counts). Bounded by ``_MAX_DEPTH``."""
        if depth > _MAX_DEPTH:
            raise _Stop
        b = self.byte()
        fixed = _FIXED_SIZE.get(b)
        if fixed is not None:
            self.pos += fixed
            if self.pos > self.end:
                raise _Stop
        elif b <= 0x1F or 0x30 <= b <= 0x33 or b in (0x52, 0x53):  # strings
            self.pos -= 1
            self.string()
        elif 0x20 <= b <= 0x2F:  # short binary
            self.raw(b - 0x20)
        elif 0x34 <= b <= 0x37:
            self.raw(((b - 0x34) << 8) + self.byte())
        elif b in (0x41, 0x42):  # binary chunks 'A' (non-final) / 'B' (final)
            self.chunks(b)
        elif b == 0x43:  # 'C' class definition, then the value that follows it
            self.string()
            self.class_fields(defs)
            self.skip_value(defs, depth)
        elif b == 0x4F or 0x60 <= b <= 0x6F:  # object instance: 'O' ref / compact ref
            self.instance(self.int_() if b == 0x4F else b - 0x60, defs, depth, self.skip_value)
        elif b == 0x51:  # 'Q' reference to an earlier value
            self.int_()
        elif b in (0x48, 0x4D, 0x55, 0x57):  # 'H' / 'M' map, 'U' / 'W' list: until 'Z'
            if b in (0x4D, 0x55):
                self.skip_type()
            per_entry = 2 if b in (0x48, 0x4D) else 1
            for _ in range(_MAX_ITEMS):
                if self.pos < self.end and self.data[self.pos] == 0x5A:  # 'Z'
                    self.pos += 1
                    return
                for _ in range(per_entry):
                    self.skip_value(defs, depth + 1)
            raise _Stop
        elif b in (0x56, 0x58) or 0x70 <= b <= 0x7F:  # fixed-length lists
            if b == 0x56 or b <= 0x77:
                self.skip_type()
            n = self.int_() if b in (0x56, 0x58) else (b - 0x70 if b <= 0x77 else b - 0x78)
            if not 0 <= n <= _MAX_ITEMS:
                raise _Stop
            for _ in range(n):
                self.skip_value(defs, depth + 1)
        else:
            raise _Stop

    def skip_draft(self, defs: list[int], depth: int = 0) -> None:
        """Skip one value of the draft encoding sofa-rpc-node (hessian.js) writes: 'O' class
        definitions with 'o' instances, 'V' lists and 'M' maps ('t' typed, 'l' / 'n' sized) ended by
        'z', with 2.0's compact strings and numbers inside. Bounded by ``_MAX_DEPTH``."""
        if depth > _MAX_DEPTH:
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

    def skip_type(self) -> None:
        """A list/map type: a string, or an int referring to an earlier type."""
        b = self.data[self.pos] if self.pos < self.end else -1
        if b <= 0x1F or 0x30 <= b <= 0x33 or b in (0x52, 0x53):
            self.string()
        else:
            self.int_()


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
_MAX_DEPTH = 16
_MAX_ITEMS = 4096


class _Stop(Exception):
    """The body is not what this reader understands."""


def read_method_name(content: bytes | memoryview) -> str | None:
    """The ``methodName`` of a hessian2 ``SofaRequest`` body, or ``None`` when it cannot be read."""
    r = _Reader(content)
    try:
        tag = r.byte()
        if tag == 0x43:  # 'C' Hessian 2.0 class definition
            r.string()
        elif tag == 0x4F:  # 'O' draft class definition: int length + raw type bytes
            r.raw(r.int_())
        else:
            return None
        draft = tag == 0x4F
        count = r.int_()
        if not 0 < count <= _MAX_FIELDS:
            return None
        fields = [r.string() for _ in range(count)]
        if METHOD_FIELD not in fields:
            return None
        index = fields.index(METHOD_FIELD)
        inst = r.byte()
        if inst == (0x6F if draft else 0x4F):  # 'o' (draft) / 'O' (2.0) + int ref
            r.int_()
        elif draft or not 0x60 <= inst <= 0x6F:  # 2.0 compact instance 0x60 + ref
            return None
        defs = [count]  # Hessian 2.0 instances refer to class definitions by index
        for _ in range(index):
            if draft:
                r.skip_simple()
            else:
                r.skip_value(defs)
        return r.string()
    except (_Stop, UnicodeDecodeError, IndexError):
        return None


def argument_bytes(content: bytes | memoryview, index: int) -> bytes | None:
    """The encoded bytes of argument ``index`` of a hessian2 ``SofaRequest`` body (the request
    object, then each argument as a value of its own, as SOFARPC and sofa-rpc-node write them; 2.0
    or sofa-rpc-node's draft encoding),
    found by skipping what comes before it; ``None`` when it cannot be read or is not there."""
    r = _Reader(content)
    defs: list[int] = []
    try:
        first = r.byte()  # the request object starts with its class definition: 2.0 'C' or draft 'O'
        if first not in (0x43, 0x4F):
            return None
        skip = r.skip_value if first == 0x43 else r.skip_draft
        r.pos -= 1
        skip(defs)
        for _ in range(index):
            if r.pos >= r.end:
                return None
            skip(defs)
        if r.pos >= r.end:
            return None
        start = r.pos
        skip(defs)
        return bytes(content[start:r.pos])
    except (_Stop, UnicodeDecodeError, IndexError):
        return None


__all__ = ["argument_bytes", "read_method_name"]
