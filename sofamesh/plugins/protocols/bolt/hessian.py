"""Reads the method name out of a hessian2 ``SofaRequest`` body, and nothing else.

Used only when a route matches on ``method`` and the request carries no ``sofa_head_method_name``
header (sofa-rpc-node with hessian sends only ``service``). Reads the class definition and the
field names, skips the values of the fields before ``methodName`` (any Hessian 2.0 value; strings,
nulls, booleans and ints in the draft encoding) and never reaches the arguments. Pure and bounded:
it stops at the end of the content, at a nesting depth and item count limit, and gives up
(``None``) on any encoding it does not expect. Hessian 2.0 bodies are read by the package's one
reader (``sofamesh.core.hessian``); the draft encoding is walked here.

Two object encodings are accepted (PROTOCOLS.md section 4 and 9):
- Hessian 2.0: ``'C' <string type> <int n> <n strings>`` then ``'O' <int ref>`` or ``0x60+ref``;
- the older draft sofa-hessian-node writes: ``'O' <int len> <type bytes> <int n> <n strings>``
  then ``'o' <int ref>``.
"""

from __future__ import annotations

from collections.abc import Callable

from sofamesh.core.hessian.reader import HessianError, HessianReader

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


def _method_name_2(content: bytes) -> str | None:
    r = HessianReader(content)
    _name, fields = r.read_instance_head()
    if METHOD_FIELD not in fields or len(fields) > _MAX_FIELDS:
        return None
    for _ in range(fields.index(METHOD_FIELD)):
        r.skip()
    return r.read_string_or_null()


def read_method_name(content: bytes | memoryview) -> str | None:
    """The ``methodName`` of a hessian2 ``SofaRequest`` body, or ``None`` when it cannot be read."""
    if len(content) == 0:
        return None
    if content[0] == 0x43:  # 'C' Hessian 2.0 class definition: the shared reader
        try:
            return _method_name_2(bytes(content))
        except HessianError:
            return None
    r = _Reader(content)
    try:
        if r.byte() != 0x4F:  # 'O' draft class definition: int length + raw type bytes
            return None
        r.raw(r.int_())
        count = r.int_()
        if not 0 < count <= _MAX_FIELDS:
            return None
        fields = [r.string() for _ in range(count)]
        if METHOD_FIELD not in fields:
            return None
        index = fields.index(METHOD_FIELD)
        if r.byte() != 0x6F:  # 'o' (draft) + int ref
            return None
        r.int_()
        for _ in range(index):
            r.skip_simple()
        return r.string()
    except (_Stop, UnicodeDecodeError, IndexError):
        return None


def _argument_bytes_2(content: bytes, index: int) -> bytes | None:
    r = HessianReader(content)
    r.skip()  # the request object, with its class definition
    for _ in range(index):
        if r.at_end():
            return None
        r.skip()
    if r.at_end():
        return None
    start = r.pos
    r.skip()
    return content[start : r.pos]


def argument_bytes(content: bytes | memoryview, index: int) -> bytes | None:
    """The encoded bytes of argument ``index`` of a hessian2 ``SofaRequest`` body (the request
    object, then each argument as a value of its own, as SOFARPC and sofa-rpc-node write them; 2.0
    or sofa-rpc-node's draft encoding),
    found by skipping what comes before it; ``None`` when it cannot be read or is not there."""
    if len(content) == 0:
        return None
    if content[0] == 0x43:  # 'C': Hessian 2.0, read by the shared reader
        try:
            return _argument_bytes_2(bytes(content), index)
        except HessianError:
            return None
    r = _Reader(content)
    defs: list[int] = []
    try:
        if content[0] != 0x4F:  # the request object starts with its draft class definition 'O'
            return None
        r.skip_draft(defs)
        for _ in range(index):
            if r.pos >= r.end:
                return None
            r.skip_draft(defs)
        if r.pos >= r.end:
            return None
        start = r.pos
        r.skip_draft(defs)
        return bytes(content[start:r.pos])
    except (_Stop, UnicodeDecodeError, IndexError):
        return None


__all__ = ["argument_bytes", "read_method_name"]
