"""HPACK (RFC 7541) for the codec's ``h2`` connection: ``hpack``'s encoder and decoder with a
leaner per-field path. Pure, no I/O.

Both subclasses keep ``hpack``'s ``HeaderTable`` and its size bookkeeping, so ``h2`` drives them
exactly as it drives the originals (``header_table_size``, ``max_header_list_size``,
``max_allowed_table_size``) and the dynamic tables stay in step with the peer's: every field the
encoder sends "with incremental indexing" is added to its table, every such field the decoder
reads is added to its own, in order, evictions done by ``HeaderTable.add``. What changes is the
cost per field: no debug logging, no ``HeaderTuple`` per decoded field, no generic integer
helpers for the one-byte case, an exact-match lookup in C (``deque.index``) before any scan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import hpack
from hpack.exceptions import HPACKDecodingError, InvalidTableIndexError, OversizedHeaderListError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

if TYPE_CHECKING:
    from collections.abc import Iterable

_STATIC: Final[tuple[tuple[bytes, bytes], ...]] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_LEN: Final = len(_STATIC)
_STATIC_EXACT: Final[dict[tuple[bytes, bytes], int]] = {}
_STATIC_NAME: Final[dict[bytes, int]] = {}
for _i, _field in enumerate(_STATIC, 1):
    _STATIC_EXACT.setdefault(_field, _i)
    _STATIC_NAME.setdefault(_field[0], _i)
_INDEXED: Final = tuple(bytes([0x80 | i]) for i in range(127))  # one-byte "indexed field" representations
_INDEX_INCREMENTAL: Final = b"\x40"
_INDEX_NEVER: Final = b"\x10"
# Huffman-coded strings already decoded: peers send some fields as literals on every block (nghttp2
# and grpc clients send :path without indexing), and decode_huffman walks them bit by bit in
# Python (about 10 us for a gRPC path). Bounded, short strings only.
_HUFFMAN: dict[bytes, bytes] = {}
_HUFFMAN_MAX: Final = 1024
_HUFFMAN_CACHED_MAX: Final = 128
_MAX_INTEGER_BYTES: Final = 8  # 7 bits each after the prefix: far beyond any legal length or index


class Encoder(hpack.Encoder):
    """``hpack.Encoder`` whose ``encode`` takes the ``(bytes, bytes)`` fields ``h2`` passes
    (``NeverIndexedHeaderTuple`` for fields that must stay out of the tables) and emits the same
    representations ``hpack`` chooses: indexed on an exact match, else a literal (with the name
    indexed when known) that joins the dynamic table unless it is never-indexed."""

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        table = self.header_table
        block: list[bytes] = []
        if table.resized:
            block.append(self._encode_table_size_change())
            table.resized = False
        dynamic = table.dynamic_entries
        for field in headers:
            pair = (field[0], field[1])
            sensitive = isinstance(field, hpack.HeaderTuple) and not field.indexable
            index = _STATIC_EXACT.get(pair)
            if index is None and dynamic:
                try:
                    index = dynamic.index(pair) + _STATIC_LEN + 1
                except ValueError:
                    index = None
            if index is not None:
                block.append(_INDEXED[index] if index < 127 else self._encode_indexed(index))
                continue
            name, value = pair
            indexbit = _INDEX_NEVER if sensitive else _INDEX_INCREMENTAL
            name_index = _STATIC_NAME.get(name)
            if name_index is None:
                for i, entry in enumerate(dynamic):
                    if entry[0] == name:
                        name_index = i + _STATIC_LEN + 1
                        break
            if name_index is None:
                block.append(self._encode_literal(name, value, indexbit, huffman))
            else:
                block.append(self._encode_indexed_literal(name_index, value, indexbit, huffman))
            if not sensitive:
                table.add(name, value)
        return b"".join(block)


class Decoder(hpack.Decoder):
    """``hpack.Decoder`` whose ``decode`` returns plain ``(bytes, bytes)`` tuples (``h2`` asks for
    raw bytes) and raises the same ``hpack`` errors on the same malformed blocks."""

    def decode(self, data: bytes, raw: bool = False) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        if type(data) is not bytes:
            data = bytes(data)  # h2 hands over bytes; a buffer would leak views into the fields
        table = self.header_table
        dynamic = table.dynamic_entries
        headers: list[tuple[bytes, bytes]] = []
        limit = self.max_header_list_size
        size = 0
        i = 0
        n = len(data)
        while i < n:
            b = data[i]
            if b & 0x80:  # indexed field
                if b != 0xFF:
                    index = b & 0x7F
                    i += 1
                else:
                    index, i = _integer(data, i, 0x7F)
                field = _lookup(dynamic, index)
            elif b & 0x40:  # literal, incremental indexing
                field, i = _literal(data, i, 0x3F, dynamic)
                table.add(field[0], field[1])
            elif b & 0x20:  # dynamic table size update: only before the first field
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                new_size, i = _integer(data, i, 0x1F)
                if new_size > self.max_allowed_table_size:
                    raise HPACKDecodingError("Encoder exceeded max allowable table size")
                self.header_table_size = new_size
                continue
            else:  # literal without indexing / never indexed
                field, i = _literal(data, i, 0x0F, dynamic)
            headers.append(field)
            size += len(field[0]) + len(field[1]) + 32
            if size > limit:
                raise OversizedHeaderListError(f"A header list larger than {limit} has been received")
        self._assert_valid_table_size()
        return headers


def _lookup(dynamic: Any, index: int) -> tuple[bytes, bytes]:
    if index <= 0:
        raise InvalidTableIndexError(f"Invalid table index {index}")
    if index <= _STATIC_LEN:
        return _STATIC[index - 1]
    try:
        entry: tuple[bytes, bytes] = dynamic[index - _STATIC_LEN - 1]
    except IndexError:
        raise InvalidTableIndexError(f"Invalid table index {index}") from None
    return entry


def _literal(data: bytes, i: int, mask: int, dynamic: Any) -> tuple[tuple[bytes, bytes], int]:
    """A literal field whose name index has a ``mask``-bit prefix (0: the name follows as a string)."""
    if data[i] & mask:
        index, i = _integer(data, i, mask)
        name = _lookup(dynamic, index)[0]
    else:
        name, i = _string(data, i + 1)
    value, i = _string(data, i)
    return (name, value), i


def _integer(data: bytes, i: int, mask: int) -> tuple[int, int]:
    """The integer with a ``mask``-bit prefix at ``data[i]``, and the offset after it."""
    value = data[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    end = min(len(data), i + _MAX_INTEGER_BYTES)
    while i < end:
        b = data[i]
        i += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    raise HPACKDecodingError("Truncated or oversized integer in header block")


def _string(data: bytes, i: int) -> tuple[bytes, int]:
    """The string literal at ``data[i]`` (Huffman-decoded when flagged), and the offset after it."""
    if i >= len(data):
        raise HPACKDecodingError("Truncated header block")
    huffman = data[i] & 0x80
    length, i = _integer(data, i, 0x7F)
    end = i + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    s = data[i:end]
    if not huffman:
        return s, end
    text = _HUFFMAN.get(s)
    if text is None:
        text = decode_huffman(s)
        if length <= _HUFFMAN_CACHED_MAX:
            if len(_HUFFMAN) >= _HUFFMAN_MAX:
                _HUFFMAN.clear()
            _HUFFMAN[s] = text
    return text, end


__all__ = ["Decoder", "Encoder"]
