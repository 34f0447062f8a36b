"""HPACK (RFC 7541): the header compression of HTTP/2, both directions, with the dynamic table and
Huffman-coded literals. Pure, no I/O, typed for mypyc.

* ``Decoder.decode(block)`` turns one complete header block into ``(name, value)`` byte pairs and
  keeps the dynamic table in step with the peer's encoder. It decodes the whole block even when
  the header list grows past ``max_header_list_size`` (RFC 9113 10.5.1: the block must be processed
  to keep the connection's state), keeping no more fields once past it, and reports the list size
  so the caller can refuse the stream. Anything RFC 7541 calls a decoding error is ``HpackError``,
  which the connection answers with GOAWAY(COMPRESSION_ERROR).
* ``Encoder.encode(fields)`` makes a header block: an exact match in the static or dynamic table is
  one index; otherwise a literal, with the name indexed when known, Huffman-coded unless that is longer. A
  literal joins the dynamic table unless it is credentials (``authorization``,
  ``proxy-authorization``, a ``cookie`` shorter than 20 bytes: never indexed, RFC 7541 7.1.3, as
  nghttp2 does), bigger than three quarters of the table (nghttp2's rule), or a field whose value changes on every
  message (``content-length``, ``date``, ``x-request-id``...: literal without indexing).
"""

from __future__ import annotations

from typing import Final

from sofamesh.plugins.protocols.http2 import huffman

# RFC 7541 Appendix A.
# fmt: off
STATIC_TABLE: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b':authority', b''),
    (b':method', b'GET'),
    (b':method', b'POST'),
    (b':path', b'/'),
    (b':path', b'/index.html'),
    (b':scheme', b'http'),
    (b':scheme', b'https'),
    (b':status', b'200'),
    (b':status', b'204'),
    (b':status', b'206'),
    (b':status', b'304'),
    (b':status', b'400'),
    (b':status', b'404'),
    (b':status', b'500'),
    (b'accept-charset', b''),
    (b'accept-encoding', b'gzip, deflate'),
    (b'accept-language', b''),
    (b'accept-ranges', b''),
    (b'accept', b''),
    (b'access-control-allow-origin', b''),
    (b'age', b''),
    (b'allow', b''),
    (b'authorization', b''),
    (b'cache-control', b''),
    (b'content-disposition', b''),
    (b'content-encoding', b''),
    (b'content-language', b''),
    (b'content-length', b''),
    (b'content-location', b''),
    (b'content-range', b''),
    (b'content-type', b''),
    (b'cookie', b''),
    (b'date', b''),
    (b'etag', b''),
    (b'expect', b''),
    (b'expires', b''),
    (b'from', b''),
    (b'host', b''),
    (b'if-match', b''),
    (b'if-modified-since', b''),
    (b'if-none-match', b''),
    (b'if-range', b''),
    (b'if-unmodified-since', b''),
    (b'last-modified', b''),
    (b'link', b''),
    (b'location', b''),
    (b'max-forwards', b''),
    (b'proxy-authenticate', b''),
    (b'proxy-authorization', b''),
    (b'range', b''),
    (b'referer', b''),
    (b'refresh', b''),
    (b'retry-after', b''),
    (b'server', b''),
    (b'set-cookie', b''),
    (b'strict-transport-security', b''),
    (b'transfer-encoding', b''),
    (b'user-agent', b''),
    (b'vary', b''),
    (b'via', b''),
    (b'www-authenticate', b''),
)
# fmt: on
_STATIC_LEN: Final = 61
_ENTRY_OVERHEAD: Final = 32  # RFC 7541 4.1
DEFAULT_TABLE_SIZE: Final = 4096  # SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113 6.5.2)
_MAX_INTEGER_BYTES: Final = 5  # 7 bits each after the prefix: 2^35, far beyond any legal length or index

_STATIC_EXACT: Final[dict[tuple[bytes, bytes], int]] = {}
_STATIC_NAME: Final[dict[bytes, int]] = {}
for _i, _field in enumerate(STATIC_TABLE, 1):
    _STATIC_EXACT.setdefault(_field, _i)
    _STATIC_NAME.setdefault(_field[0], _i)

_NEVER_INDEXED: Final = frozenset({b"authorization", b"proxy-authorization"})
NOT_INDEXED: Final = frozenset(
    {
        b"content-length",
        b"date",
        b"age",
        b"etag",
        b"last-modified",
        b"if-modified-since",
        b"if-none-match",
        b"location",
        b"set-cookie",
        b"grpc-message",
        b"x-request-id",
        b"traceparent",
    }
)
_SHORT_COOKIE: Final = 20

# Huffman-coded strings already decoded, and string literals already encoded: peers send some
# fields as literals in every block (grpc clients send :path without indexing). Bounded, short only.
_DECODED: dict[bytes, bytes] = {}
_ENCODED: dict[bytes, bytes] = {}
_CACHE_MAX: Final = 1024
_BLOCKS_MAX: Final = 16  # whole blocks an encoder or decoder keeps
_CACHED_LEN_MAX: Final = 128


class HpackError(ValueError):
    """A header block RFC 7541 calls a decoding error (a COMPRESSION_ERROR for the connection)."""


def _entry_size(name: bytes, value: bytes) -> int:
    return len(name) + len(value) + _ENTRY_OVERHEAD


class Decoder:
    """The receiving side of one connection's HPACK context."""

    __slots__ = ("_blocks", "_entries", "_max_size", "_size", "_update_due", "max_allowed_size", "max_header_list_size")

    def __init__(self, max_allowed_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 64 * 1024) -> None:
        self._entries: list[tuple[bytes, bytes]] = []  # oldest first
        self._size = 0
        self._max_size = max_allowed_size
        self.max_allowed_size = max_allowed_size  # our SETTINGS_HEADER_TABLE_SIZE: the peer may not exceed it
        self.max_header_list_size = max_header_list_size
        self._update_due = False  # the next block must begin with a size update (``limit_table``)
        # Blocks already decoded with the table as it is, and their list size (made on first use,
        # emptied when the table changes): a peer sends the same block again and again.
        self._blocks: dict[bytes, tuple[tuple[tuple[bytes, bytes], ...], int]] | None = None

    @property
    def table_size(self) -> int:
        """Bytes the dynamic table holds now, counted as RFC 7541 4.1 does."""
        return self._size

    @property
    def table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table, newest entry first (index 62 first)."""
        return self._entries[::-1]

    def limit_table(self, size: int) -> None:
        """Our SETTINGS_HEADER_TABLE_SIZE of ``size`` is acknowledged: a size update above it is an
        error from now on, and while the table may hold more the peer's next block must begin with
        the update that shrinks it (RFC 7541 4.2)."""
        self.max_allowed_size = size
        if self._max_size > size:
            self._update_due = True
            self._blocks = None

    def decode(self, data: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
        """The fields of one complete header block and the header list size (RFC 9113 6.5.2). When
        that size is over ``max_header_list_size`` the fields stop there and the caller refuses."""
        if self._update_due and not (data and data[0] & 0xE0 == 0x20):
            allowed = self.max_allowed_size
            raise HpackError(f"header block without the dynamic table size update to at most {allowed} it owes")
        limit = self.max_header_list_size
        blocks = self._blocks
        if blocks is not None:
            known = blocks.get(data)
            if known is not None and known[1] <= limit:
                return list(known[0]), known[1]
        fields: list[tuple[bytes, bytes]] = []
        size = 0
        i = 0
        n = len(data)
        seen_field = False
        cacheable = True
        while i < n:
            b = data[i]
            if b & 0x80:  # indexed field (6.1)
                if b != 0xFF:
                    index = b & 0x7F
                    i += 1
                else:
                    index, i = _integer(data, i, 0x7F)
                field = STATIC_TABLE[index - 1] if 0 < index <= _STATIC_LEN else self._lookup(index)
            elif b & 0x40:  # literal with incremental indexing (6.2.1)
                field, i = self._literal(data, i, 0x3F)
                self._add(field[0], field[1])
                cacheable = False  # the table changed: the same bytes would now mean other fields
            elif b & 0x20:  # dynamic table size update (6.3): only before the first field (4.2)
                if seen_field:
                    raise HpackError("dynamic table size update after a header field")
                new_size, i = _integer(data, i, 0x1F)
                if new_size > self.max_allowed_size:
                    allowed = self.max_allowed_size
                    raise HpackError(f"dynamic table size update to {new_size} above the {allowed} allowed")
                self._max_size = new_size
                self._update_due = False
                self._evict(0)
                self._blocks = None
                cacheable = False
                continue
            else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
                if b & 0x10:
                    cacheable = False  # credentials are not kept beyond the block that carries them
                field, i = self._literal(data, i, 0x0F)
            seen_field = True
            size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if size <= limit:
                fields.append(field)
        if cacheable and size <= limit:
            blocks = self._blocks
            if blocks is None or len(blocks) >= _BLOCKS_MAX:
                blocks = self._blocks = {}
            blocks[data] = (tuple(fields), size)
        return fields, size

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if index <= 0:
            raise HpackError("header field index 0")
        if index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        position = len(self._entries) - (index - _STATIC_LEN)
        if position < 0:
            raise HpackError(f"header field index {index} beyond the dynamic table")
        return self._entries[position]

    def _literal(self, data: bytes, i: int, mask: int) -> tuple[tuple[bytes, bytes], int]:
        if data[i] & mask:
            index, i = _integer(data, i, mask)
            name = self._lookup(index)[0]
        else:
            name, i = _string(data, i + 1)
        value, i = _string(data, i)
        return (name, value), i

    def _add(self, name: bytes, value: bytes) -> None:
        self._blocks = None  # every dynamic index moves
        size = _entry_size(name, value)
        if size > self._max_size:  # 4.4: an entry larger than the table empties it
            self._entries.clear()
            self._size = 0
            return
        self._evict(size)
        self._entries.append((name, value))
        self._size += size

    def _evict(self, room: int) -> None:
        entries = self._entries
        drop = 0
        while self._size + room > self._max_size and drop < len(entries):
            self._size -= _entry_size(entries[drop][0], entries[drop][1])
            drop += 1
        if drop:
            del entries[:drop]


def _integer(data: bytes, i: int, mask: int) -> tuple[int, int]:
    """The integer with a ``mask``-bit prefix at ``data[i]`` (5.1) and the offset after it."""
    value = data[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    end = i + _MAX_INTEGER_BYTES
    n = len(data)
    while i < end:
        if i >= n:
            raise HpackError("header block ends inside an integer")
        b = data[i]
        i += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    raise HpackError("integer longer than 5 continuation bytes in a header block")


def _string(data: bytes, i: int) -> tuple[bytes, int]:
    """The string literal at ``data[i]`` (5.2), Huffman-decoded when flagged, and the offset after it."""
    if i >= len(data):
        raise HpackError("header block ends before a string literal")
    coded = data[i] & 0x80
    length, i = _integer(data, i, 0x7F)
    end = i + length
    if end > len(data):
        raise HpackError(f"string literal of {length} bytes runs past the header block")
    raw = data[i:end]
    if not coded:
        return raw, end
    text = _DECODED.get(raw)
    if text is None:
        try:
            text = huffman.decode(raw)
        except huffman.HuffmanError as exc:
            raise HpackError(str(exc)) from None
        if length <= _CACHED_LEN_MAX:
            if len(_DECODED) >= _CACHE_MAX:
                _DECODED.clear()
            _DECODED[raw] = text
    return text, end


def _put_integer(out: bytearray, value: int, prefix_bits: int, first: int) -> None:
    """Append ``value`` with an N-bit prefix (5.1); ``first`` holds the representation's flag bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        out.append(first | value)
        return
    out.append(first | limit)
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_string(out: bytearray, s: bytes, use_huffman: bool) -> None:
    """Append the string literal of ``s`` (5.2): Huffman-coded unless that is longer."""
    if not use_huffman:
        _put_integer(out, len(s), 7, 0x00)
        out += s
        return
    literal = _ENCODED.get(s)
    if literal is None:
        buf = bytearray()
        if huffman.encoded_length(s) <= len(s):
            coded = huffman.encode(s)
            _put_integer(buf, len(coded), 7, 0x80)
            buf += coded
        else:
            _put_integer(buf, len(s), 7, 0x00)
            buf += s
        literal = bytes(buf)
        if len(s) <= _CACHED_LEN_MAX:
            if len(_ENCODED) >= _CACHE_MAX:
                _ENCODED.clear()
            _ENCODED[s] = literal
    out += literal


class Encoder:
    """The sending side of one connection's HPACK context."""

    __slots__ = (
        "_blocks",
        "_entries",
        "_exact",
        "_first_seq",
        "_huffman",
        "_last_block",
        "_last_key",
        "_max_size",
        "_names",
        "_not_indexed",
        "_pending_size",
        "_size",
    )

    def __init__(
        self, max_size: int = DEFAULT_TABLE_SIZE, *, huffman: bool = True, not_indexed: frozenset[bytes] = NOT_INDEXED
    ) -> None:
        self._huffman = huffman  # Huffman-code literals when that makes them shorter
        self._not_indexed = not_indexed  # names sent as literals without indexing
        self._entries: list[tuple[bytes, bytes]] = []  # oldest first; entry p has sequence _first_seq + p
        self._first_seq = 0
        self._size = 0
        self._max_size = max_size
        self._exact: dict[tuple[bytes, bytes], int] = {}  # field -> sequence of its newest entry
        self._names: dict[bytes, int] = {}  # name -> sequence of its newest entry
        self._pending_size = -1  # a size update to signal at the start of the next block
        # Blocks already encoded with the table as it is (made on first use, emptied when the table
        # changes): a connection sends the same header lists again and again (gRPC calls, trailers).
        self._blocks: dict[tuple[tuple[bytes, bytes], ...], bytes] | None = None
        # The block given last, by the very tuple it was asked for with: a caller that sends the same
        # tuple again (the codec's blocks sent last) gets it with no hash or lookup. Forgotten with
        # the blocks kept.
        self._last_key: tuple[tuple[bytes, bytes], ...] | None = None
        self._last_block = b""

    def set_max_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE changed: use at most 4096 bytes of it, and say so
        at the start of the next block (RFC 7541 4.2, 6.3)."""
        size = min(size, DEFAULT_TABLE_SIZE)
        if size == self._max_size and self._pending_size < 0:
            return
        self._max_size = size
        self._evict(0)
        self._pending_size = size
        self._blocks = None
        self._last_key = None

    @property
    def table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table, newest entry first (index 62 first)."""
        return self._entries[::-1]

    @property
    def table_size(self) -> int:
        return self._size

    def encode(self, fields: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> bytes:
        """One header block for ``fields`` (names already lower case)."""
        key = tuple(fields)  # a tuple is its own key
        if key is self._last_key:
            return self._last_block
        blocks = self._blocks
        if blocks is not None and self._pending_size < 0:
            known = blocks.get(key)
            if known is not None:
                self._last_key = key
                self._last_block = known
                return known
        out = bytearray()
        cacheable = self._pending_size < 0  # a block signalling a size update is sent once
        if not cacheable:
            _put_integer(out, self._pending_size, 5, 0x20)
            self._pending_size = -1
        exact = self._exact
        for field in fields:
            index = _STATIC_EXACT.get(field, 0)
            if not index and exact:
                seq = exact.get(field, -1)
                if seq >= self._first_seq:
                    index = self._index_of(seq)
            if index:
                if index < 0x7F:
                    out.append(0x80 | index)
                else:
                    _put_integer(out, index, 7, 0x80)
                continue
            name, value = field
            name_index = _STATIC_NAME.get(name, 0)
            if not name_index:
                seq = self._names.get(name, -1)
                if seq >= self._first_seq:
                    name_index = self._index_of(seq)
            if name in _NEVER_INDEXED or (name == b"cookie" and len(value) < _SHORT_COOKIE):
                _put_integer(out, name_index, 4, 0x10)
                cacheable = False  # credentials are not kept beyond the block that carries them
            elif name in self._not_indexed or _entry_size(name, value) * 4 > self._max_size * 3:
                _put_integer(out, name_index, 4, 0x00)
            else:
                _put_integer(out, name_index, 6, 0x40)
                self._add(name, value)  # the table changed: the blocks kept so far are forgotten
                cacheable = False  # this one added an entry: sent again, it would be an index
            if not name_index:
                _put_string(out, name, self._huffman)
            _put_string(out, value, self._huffman)
        block = bytes(out)
        if cacheable:
            blocks = self._blocks
            if blocks is None or len(blocks) >= _BLOCKS_MAX:
                blocks = self._blocks = {}
            blocks[key] = block
            self._last_key = key
            self._last_block = block
        return block

    def _index_of(self, seq: int) -> int:
        newest = self._first_seq + len(self._entries) - 1
        return _STATIC_LEN + 1 + newest - seq

    def _add(self, name: bytes, value: bytes) -> None:
        self._blocks = None  # every dynamic index moves
        self._last_key = None
        size = _entry_size(name, value)
        self._evict(size)
        seq = self._first_seq + len(self._entries)
        self._entries.append((name, value))
        self._size += size
        self._exact[(name, value)] = seq
        self._names[name] = seq

    def _evict(self, room: int) -> None:
        entries = self._entries
        drop = 0
        while self._size + room > self._max_size and drop < len(entries):
            name, value = entries[drop]
            self._size -= _entry_size(name, value)
            seq = self._first_seq + drop
            if self._exact.get((name, value)) == seq:
                del self._exact[(name, value)]
            if self._names.get(name) == seq:
                del self._names[name]
            drop += 1
        if drop:
            del entries[:drop]
            self._first_seq += drop


__all__ = ["DEFAULT_TABLE_SIZE", "NOT_INDEXED", "STATIC_TABLE", "Decoder", "Encoder", "HpackError"]
