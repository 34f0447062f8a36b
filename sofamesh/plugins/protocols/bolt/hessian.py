"""Reads the method name out of a hessian2 ``SofaRequest`` body, and nothing else.

Used only when a route matches on ``method`` and the request carries no ``sofa_head_method_name``
header (sofa-rpc-node with hessian sends only ``service``). Reads the class definition, the field
names and the first field values up to ``methodName``; never decodes arguments. Pure and bounded:
it stops at the end of the content and gives up (``None``) on any encoding it does not expect.

Two object encodings are accepted (PROTOCOLS.md section 4 and 9):
- Hessian 2.0: ``'C' <string type> <int n> <n strings>`` then ``'O' <int ref>`` or ``0x60+ref``;
- the older draft sofa-hessian-node writes: ``'O' <int len> <type bytes> <int n> <n strings>``
  then ``'o' <int ref>``.
"""

from __future__ import annotations

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
        """Skip one value that is a string, null, boolean or compact int; give up on anything else."""
        b = self.data[self.pos] if self.pos < self.end else -1
        if b in (0x54, 0x46):  # 'T' / 'F'
            self.pos += 1
        elif 0x80 <= b <= 0xD7 or b == 0x49:
            self.int_()
        else:
            self.string()


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
        for _ in range(index):
            r.skip_simple()
        return r.string()
    except (_Stop, UnicodeDecodeError, IndexError):
        return None


__all__ = ["read_method_name"]
