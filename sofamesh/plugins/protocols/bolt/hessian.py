"""Reads the method name out of a hessian2 ``SofaRequest`` body, and nothing else.

Used only when a route matches on ``method`` and the request carries no ``sofa_head_method_name``
header (sofa-rpc-node with hessian sends only ``service``). Reads the class definition and the
field names, skips the values of the fields before ``methodName`` (any Hessian 2.0 value; strings,
nulls, booleans and ints in the draft encoding) and never reaches the arguments. Pure and bounded:
it stops at the end of the content, at a nesting depth and item count limit, and gives up
(``None``) on any encoding it does not expect. Hessian 2.0 bodies are read by the package's one
reader (``sofamesh.core.hessian``), draft ones by its draft reader (``sofamesh.core.hessian.draft``).

Two object encodings are accepted (PROTOCOLS.md section 4 and 9):
- Hessian 2.0: ``'C' <string type> <int n> <n strings>`` then ``'O' <int ref>`` or ``0x60+ref``;
- the older draft sofa-hessian-node writes: ``'O' <int len> <type bytes> <int n> <n strings>``
  then ``'o' <int ref>``.
"""

from __future__ import annotations

from sofamesh.core.hessian.draft import DraftReader
from sofamesh.core.hessian.reader import HessianError, HessianReader

METHOD_FIELD = "methodName"
_MAX_FIELDS = 64


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
    r = DraftReader(content)
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
    except (HessianError, UnicodeDecodeError, IndexError):
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
    r = DraftReader(content)
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
    except (HessianError, UnicodeDecodeError, IndexError):
        return None


__all__ = ["argument_bytes", "read_method_name"]
