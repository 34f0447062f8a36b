"""HTTP/2 header fields: the checks on header blocks we receive and the field lists we send.

Pure functions, no I/O. The connection machine leaves header fields to this module, which checks
and normalises each block in one pass:

* ``received_fields`` enforces on every received block (RFC 9113 8.2 and 8.3): field names lower
  case without control characters, spaces or inner colons; values without NUL/CR/LF or surrounding
  whitespace; no connection-specific fields, ``te`` only as ``trailers``; pseudo-header fields
  known for the block kind, once each, before every regular field, the required ones present
  (``:method``, ``:scheme``, ``:path``, or CONNECT's rules; ``:status``), none in trailers;
  ``:authority`` and ``host`` present and equal, ``host`` once; ``:path`` not empty. It also joins
  ``cookie`` crumbs into one field at the end (RFC 9113 8.2.3). A block that fails raises
  ``MalformedFields`` (the codec makes it a connection error: GOAWAY PROTOCOL_ERROR).
* ``field_block`` builds what we send: lower-case names, values trimmed, no pseudo-header fields
  or connection-specific fields from the event, ``te`` only as ``trailers``. Pseudo-header fields
  come first and only from the codec. (Credentials are never indexed: ``hpack_codec``'s encoder
  decides that by name.) ``block_key`` / ``known_block`` / ``keep_block`` keep whole blocks built
  before (the codec's request blocks) by what they were built from; ``LastBlock`` keeps the one a
  connection sent last, found again by the identity of the ``Headers`` it was built from.
"""

from __future__ import annotations

import re
from typing import Final

from sofamesh.core.headers import Headers

REQUEST: Final = 0
RESPONSE: Final = 1
TRAILERS: Final = 2

# Connection-specific fields (RFC 9113 8.2.2) never cross into HTTP/2; ``te`` only as "trailers".
CONNECTION_FIELDS: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings"}
)
_CONNECTION_FIELDS_B: Final = frozenset(n.encode() for n in CONNECTION_FIELDS - {"http2-settings"})
_PSEUDO: Final[tuple[frozenset[bytes], ...]] = (
    frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"}),
    frozenset({b":status"}),
    frozenset(),
)
# A name may hold 0x21..0x7e but no upper case letter and no colon (RFC 9113 8.2.1).
_BAD_NAME: Final = re.compile(rb"[^!-9;-@\[-~]")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
TRIM: Final = " \t\r\n\x0b\x0c"  # ASCII whitespace only, never latin-1's \x85 or \xa0

# Regular fields already checked, with their text: most fields of a connection repeat on every
# request. Bounded; a field that is not cached is simply checked again.
_CHECKED: dict[tuple[bytes, bytes], tuple[str, str]] = {}
# Pseudo-header fields whose value passed the character checks, with their text (``:path``,
# ``:authority``... repeat too); where they stand in the block and whether the block kind allows
# them is still checked on every block.
_CHECKED_PSEUDO: dict[tuple[bytes, bytes], tuple[str, str]] = {}
_BLOCKS_MAX: Final = 64
_BLOCK_FIELDS_MAX: Final = 16
_CHECKED_MAX: Final = 4096
_CACHED_VALUE_MAX: Final = 256
# The same for fields we send: the event's (name, value) -> what goes on the wire (None: dropped).
# A dropped field is cached as an empty name; a sentinel compared with ``is`` would not survive
# mypyc, which boxes a new tuple for a tuple constant at each use.
_SENT: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_DROPPED: Final = (b"", b"")
# Whole blocks already built for sending, by what they were built from (``block_key``): a client
# sends the same request head on every gRPC call. Small blocks of short fields without credentials
# only (the HPACK encoder still decides per block what it indexes, and never indexes credentials).
_SENT_BLOCKS: dict[tuple[object, tuple[tuple[str, str], ...]], tuple[tuple[bytes, bytes], ...]] = {}
_CREDENTIALS: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie"})
# Heads that never repeat (a trace id or request id per request) would only pay for being kept: once
# _GIVE_UP blocks were kept and none of them was asked for again, the next _SKIP heads are not keyed.
_GIVE_UP: Final = 4 * _BLOCKS_MAX
_SKIP: Final = 4096
_unasked = 0  # blocks kept since a kept block was last found
_skipping = 0  # heads still to pass without a key


class MalformedFields(ValueError):
    """A received header block breaks RFC 9113 8.2/8.3; the message says how."""


def keepable(raw: list[tuple[bytes, bytes]]) -> bool:
    """Whether what a received block gives may be kept by the block: few fields, each short."""
    if len(raw) > _BLOCK_FIELDS_MAX:
        return False
    for name, value in raw:
        if len(name) + len(value) > _CACHED_VALUE_MAX:
            return False
    return True


def received_fields(raw: list[tuple[bytes, bytes]], kind: int) -> list[tuple[str, str]]:
    """The fields of a received header block of ``kind`` (REQUEST, RESPONSE or TRAILERS) as text
    (latin-1, so they re-encode to the same bytes), checked as the module docstring says. The codec
    keeps what it reads from a block by the block (``keepable``): a peer sends the same list on
    every call (the HPACK decoder hands back the same field objects for a block it read before)."""
    out: list[tuple[str, str]] = []
    checked = _CHECKED
    checked_pseudo = _CHECKED_PSEUDO
    pseudo: dict[bytes, bytes] = {}
    regular = False
    host: bytes | None = None
    cookies: list[bytes] | None = None
    for field in raw:
        known = checked.get(field)
        if known is not None:
            regular = True
            out.append(known)
            continue
        name, value = field
        if name[:1] == b":":
            if regular:
                raise MalformedFields(f"pseudo-header field {name!r} after a regular field")
            if name in pseudo:
                raise MalformedFields(f"duplicate pseudo-header field {name!r}")
            if name not in _PSEUDO[kind]:
                raise MalformedFields(f"pseudo-header field {name!r} not allowed in this header block")
            pseudo[name] = value
            known = checked_pseudo.get(field)
            if known is None:  # the value's characters, checked once per value
                if _BAD_VALUE.search(value) is not None:
                    raise MalformedFields(f"illegal character or surrounding whitespace in {name!r}: {value!r}")
                known = (name.decode("latin-1"), value.decode("latin-1"))
                if len(value) <= _CACHED_VALUE_MAX:
                    if len(checked_pseudo) >= _CHECKED_MAX:
                        checked_pseudo.clear()
                    checked_pseudo[field] = known
            out.append(known)
            continue
        regular = True
        if not name or _BAD_NAME.search(name) is not None:
            raise MalformedFields(f"illegal header field name {name!r}")
        if _BAD_VALUE.search(value) is not None:
            raise MalformedFields(f"illegal character or surrounding whitespace in {name!r}: {value!r}")
        if name in _CONNECTION_FIELDS_B:
            raise MalformedFields(f"connection-specific header field {name!r}")
        if name == b"te" and value.lower() != b"trailers":
            raise MalformedFields(f"te header field must be 'trailers', got {value!r}")
        if name == b"cookie":
            if cookies is None:
                cookies = []
            cookies.append(value)
            continue
        text = (name.decode("latin-1"), value.decode("latin-1"))
        if name == b"host":
            if host is not None:
                raise MalformedFields("more than one host header field")
            host = value
        elif len(value) <= _CACHED_VALUE_MAX:
            if len(checked) >= _CHECKED_MAX:
                checked.clear()
            checked[field] = text
        out.append(text)
    if kind == REQUEST:
        _check_request(pseudo, host)
    elif kind == RESPONSE:
        if b":status" not in pseudo:
            raise MalformedFields("response header block without :status")
    if cookies is not None:
        out.append(("cookie", b"; ".join(cookies).decode("latin-1")))
    return out


def _check_request(pseudo: dict[bytes, bytes], host: bytes | None) -> None:
    method = pseudo.get(b":method")
    if method is None:
        raise MalformedFields("request header block without :method")
    if method == b"CONNECT" and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise MalformedFields("CONNECT request with :scheme or :path")
    else:
        if b":scheme" not in pseudo or b":path" not in pseudo:
            raise MalformedFields("request header block without :scheme or :path")
        if b":protocol" in pseudo and method != b"CONNECT":
            raise MalformedFields(":protocol on a request that is not CONNECT")
    if pseudo.get(b":path", b"-") == b"":
        raise MalformedFields("empty :path")
    authority = pseudo.get(b":authority")
    if authority is None and host is None:
        raise MalformedFields("request header block without :authority or host")
    if authority is not None and host is not None and authority != host:
        raise MalformedFields(f"mismatched :authority and host: {authority!r} / {host!r}")


def wire(s: str) -> bytes:
    """Field text as sent: latin-1 when it fits (the text we decoded re-encodes to the same bytes)."""
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def field_block(headers: Headers, first: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``first`` (pseudo-headers we set) followed by ``headers`` made fit for HTTP/2 (see the module
    docstring). ``first`` is extended in place and returned."""
    out = first
    sent = _SENT
    for field in headers:
        if type(field) is not tuple:
            field = (field[0], field[1])
        wired = sent.get(field)
        if wired is None:
            wired = _sent_field(field[0], field[1])
            if len(field[1]) <= _CACHED_VALUE_MAX:
                if len(sent) >= _CHECKED_MAX:
                    sent.clear()
                sent[field] = wired
        if wired[0]:
            out.append(wired)
    return out


def block_key(prefix: object, headers: Headers) -> tuple[object, tuple[tuple[str, str], ...]] | None:
    """The key under which the block built from ``headers`` and what ``prefix`` stands for (the
    pseudo-header fields' inputs) is kept; None for a block too long to keep, and while keeping is
    skipped because the blocks kept lately were never asked for again."""
    global _skipping
    if _skipping:
        _skipping -= 1
        return None
    if len(headers) > _BLOCK_FIELDS_MAX:
        return None
    return (prefix, tuple(headers))


def known_block(key: tuple[object, tuple[tuple[str, str], ...]]) -> list[tuple[bytes, bytes]] | None:
    """The fields of the block kept under ``key`` (a new list), or None."""
    global _unasked
    try:
        known = _SENT_BLOCKS.get(key)
    except TypeError:  # a header that is not a (name, value) tuple: never kept
        return None
    if known is None:
        return None
    _unasked = 0
    return list(known)


def keep_block(key: tuple[object, tuple[tuple[str, str], ...]], fields: list[tuple[bytes, bytes]]) -> None:
    """Keep ``fields``, built from what ``key`` names, unless the block carries credentials or long values."""
    global _unasked, _skipping
    if not _plain(fields):
        return
    if len(_SENT_BLOCKS) >= _BLOCKS_MAX:
        _SENT_BLOCKS.clear()
    try:
        _SENT_BLOCKS[key] = tuple(fields)
    except TypeError:
        return
    _unasked += 1
    if _unasked >= _GIVE_UP:
        _unasked = 0
        _skipping = _SKIP
        _SENT_BLOCKS.clear()


def _plain(fields: list[tuple[bytes, bytes]]) -> bool:
    """No credentials and no long value: a block that may be kept."""
    for name, value in fields:
        if len(value) > _CACHED_VALUE_MAX or name in _CREDENTIALS:
            return False
    return True


class LastBlock:
    """The block one connection sent last of one kind (request, response or trailers) and what it
    was built from: one ``Headers`` object, found again by identity, and the pseudo-header fields'
    inputs (``pseudo``). Heads made from a block the peer sends on every call carry the same
    ``Headers`` object each time (``Headers`` are never changed in place), so the same call sent
    again finds its block with no key built or hashed. Blocks with credentials or long values are
    not kept, as with ``keep_block``."""

    __slots__ = ("fields", "headers", "pseudo")

    def __init__(self) -> None:
        self.headers: Headers | None = None
        self.pseudo: object = None
        self.fields: tuple[tuple[bytes, bytes], ...] = ()

    def find(self, headers: Headers, pseudo: object) -> tuple[tuple[bytes, bytes], ...] | None:
        """The fields sent last (the same tuple each time: the HPACK encoder then finds its block by
        identity) when they were built from ``headers`` and ``pseudo``."""
        if headers is self.headers and pseudo == self.pseudo:
            return self.fields
        return None

    def keep(
        self, headers: Headers, pseudo: object, fields: list[tuple[bytes, bytes]]
    ) -> tuple[tuple[bytes, bytes], ...]:
        """Keep ``fields``, built from ``headers`` and ``pseudo``; returns them as the tuple to send."""
        kept = tuple(fields)
        if _plain(fields):
            self.headers = headers
            self.pseudo = pseudo
            self.fields = kept
        else:
            self.headers = None
        return kept


def _sent_field(name: str, value: str) -> tuple[bytes, bytes]:
    """What goes on the wire for one field; ``_DROPPED`` (empty name) when it is not sent."""
    lname = name.lower()
    if lname[:1] == ":" or lname in CONNECTION_FIELDS or lname == "host":
        return _DROPPED
    value = value.strip(TRIM)
    if lname == "te" and value.lower() != "trailers":
        return _DROPPED
    return (wire(lname), wire(value))


__all__ = [
    "CONNECTION_FIELDS",
    "REQUEST",
    "RESPONSE",
    "TRAILERS",
    "TRIM",
    "LastBlock",
    "MalformedFields",
    "block_key",
    "field_block",
    "keep_block",
    "keepable",
    "known_block",
    "received_fields",
    "wire",
]
