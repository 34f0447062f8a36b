"""HTTP/1 wire pieces: hop-by-hop headers, status reasons, head and chunk encoding. Pure."""

from __future__ import annotations

from http import HTTPStatus

from sofamesh.core.headers import Headers

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade",
})

_REASONS = {s.value: s.phrase for s in HTTPStatus}

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def end_to_end(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers and those the Connection header names (RFC 9110 7.6.1)."""
    named = {t.strip().lower() for k, v in pairs if k.lower() == "connection" for t in v.split(",")}
    drop = HOP_BY_HOP | named
    return [(k, v) for k, v in pairs if k.lower() not in drop]


def encode_headers(lines: list[str], headers: Headers, skip: frozenset[str] = frozenset()) -> None:
    for k, v in headers:
        if k.lower() in skip or k[:1] == ":":
            continue  # framing is ours; HTTP/2 pseudo-headers have no HTTP/1 form
        if "\r" in v or "\n" in v or "\r" in k or "\n" in k:
            continue  # never let a header value split the head
        lines.append(f"{k}: {v}\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Headers | None) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    lines: list[str] = ["0\r\n"]
    encode_headers(lines, trailers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


__all__ = ["HOP_BY_HOP", "METHODS_WITH_BODY", "chunk", "encode_headers", "end_to_end", "last_chunk", "reason"]
