"""HTTP/1 wire pieces: hop-by-hop headers, status reasons, head and chunk encoding. Pure.

Header names are classified once per spelling (``name_kind``), not lower-cased on every message:
a head is split in one pass on the way in (end-to-end fields, framing fields) and written in one
pass on the way out (framing is always the codec's own).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from sofamesh.core.headers import Headers

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade",
})

# What a header name is to HTTP/1 framing. Kinds below SENT_BELOW are written out by the encoders;
# the rest are framing (the encoder writes its own) or cannot be written at all.
PLAIN: Final = 0
HOST: Final = 1
EXPECT: Final = 2
HOP: Final = 3  # hop-by-hop, not framing (te, upgrade, proxy-*, trailer): dropped on the way in only
SENT_BELOW: Final = 4
CONTENT_LENGTH: Final = 4
TRANSFER_ENCODING: Final = 5
CONNECTION: Final = 6
KEEP_ALIVE: Final = 7
UNSENDABLE: Final = 8  # an HTTP/2 pseudo-header, or CR/LF in the name

_KIND_OF = {"host": HOST, "expect": EXPECT, "content-length": CONTENT_LENGTH, "transfer-encoding": TRANSFER_ENCODING,
            "connection": CONNECTION, "keep-alive": KEEP_ALIVE}
_MAX_NAMES = 1024  # spellings remembered; past that (a peer inventing names) they are classified every time
_kinds: dict[str, int] = {}
FIELD_NAMES: dict[bytes, str] = {}  # wire spelling -> its str (read by the codec's on_header)

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {phrase}\r\n" for code, phrase in _REASONS.items()}

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def name_kind(name: str) -> int:
    kind = _kinds.get(name)
    if kind is None:
        lk = name.lower()
        if name[:1] == ":" or "\r" in name or "\n" in name:
            kind = UNSENDABLE
        else:
            kind = _KIND_OF.get(lk, HOP if lk in HOP_BY_HOP else PLAIN)
        if len(_kinds) < _MAX_NAMES:
            _kinds[name] = kind
    return kind


def field_name(raw: bytes) -> str:
    """The ``str`` for a name as the parser gives it: one shared object per spelling, so its hash
    and its kind are computed once."""
    name = FIELD_NAMES.get(raw)
    if name is None:
        name = raw.decode("latin-1")
        if len(FIELD_NAMES) < _MAX_NAMES:
            FIELD_NAMES[raw] = name
    return name


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def status_line(status: int, phrase: str = "") -> str:
    if not phrase:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        phrase = reason(status)
    return f"HTTP/1.1 {status} {phrase}\r\n"


Fields = list[tuple[str, str]]


def split_fields(raw: Fields) -> tuple[Fields, str | None, str | None, str, str | None, bool]:
    """One incoming header block in one pass: (end-to-end fields in wire order, first host, first
    content-length, every transfer-encoding joined, first end-to-end expect, whether hosts differ).

    Hop-by-hop fields go, and so do those the Connection header names (RFC 9110 7.6.1)."""
    fields: Fields = []
    host: str | None = None
    cl: str | None = None
    te = ""
    expect: str | None = None
    mixed_hosts = False
    named = ""
    kinds = _kinds
    for item in raw:
        kind = kinds.get(item[0])
        if kind is None:
            kind = name_kind(item[0])
        if kind == PLAIN:
            fields.append(item)
            continue
        if kind == HOST:
            if host is None:
                host = item[1]
            elif item[1] != host:
                mixed_hosts = True
        elif kind == CONTENT_LENGTH:
            if cl is None:
                cl = item[1]
        elif kind == EXPECT:
            if expect is None:
                expect = item[1]
        elif kind == TRANSFER_ENCODING:
            te = f"{te},{item[1]}" if te else item[1]
            continue
        elif kind == CONNECTION:
            named = f"{named},{item[1]}" if named else item[1]
            continue
        elif kind != UNSENDABLE:
            continue  # hop-by-hop
        fields.append(item)
    if named:
        drop = {t.strip().lower() for t in named.split(",")} - HOP_BY_HOP
        if drop:
            fields = [kv for kv in fields if kv[0].lower() not in drop]
            expect = next((v for k, v in fields if k.lower() == "expect"), None)
    return fields, host, cl, te, expect, mixed_hosts


def encode_fields(lines: list[str], headers: Headers) -> tuple[str | None, bool]:
    """Append the fields of ``headers`` that HTTP/1 carries end to end to ``lines``; returns
    (the first content-length, whether there is a host).

    Framing fields are the encoder's; HTTP/2 pseudo-headers have no HTTP/1 form; a name or value
    with CR or LF is dropped (it would split the head)."""
    cl: str | None = None
    has_host = False
    kinds = _kinds
    for item in headers:
        k, v = item
        kind = kinds.get(k)
        if kind is None:
            kind = name_kind(k)
        if kind < SENT_BELOW:
            if kind == HOST:
                has_host = True
            if "\r" in v or "\n" in v:
                continue
            lines.append(f"{k}: {v}\r\n")
        elif kind == CONTENT_LENGTH and cl is None:
            cl = v
    return cl, has_host


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Headers | None) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    lines: list[str] = ["0\r\n"]
    for k, v in trailers:
        if k[:1] == ":" or "\r" in v or "\n" in v or "\r" in k or "\n" in k:
            continue  # never let a field split the trailer block
        lines.append(f"{k}: {v}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


__all__ = ["FIELD_NAMES", "HOP_BY_HOP", "METHODS_WITH_BODY", "chunk", "encode_fields", "field_name", "last_chunk",
           "name_kind", "reason", "split_fields", "status_line"]
