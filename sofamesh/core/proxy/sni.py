"""The server name (SNI) a TLS ClientHello asks for, read from the first bytes of a connection
without terminating TLS (what Envoy's ``tls_inspector`` listener filter does). Pure: bytes in."""

from __future__ import annotations

MAX_HELLO = 16 * 1024 + 5  # Envoy's tls_inspector reads at most 16 KiB (the largest TLS record)
MORE = object()
"""Returned while the bytes so far are the start of a ClientHello that is not complete yet."""


def _handshake(data: bytes) -> bytes | object | None:
    """The handshake bytes carried by the leading TLS records, ``MORE`` while the ClientHello's
    length is not reached, ``None`` when this is not a TLS handshake."""
    out = bytearray()
    pos = 0
    while True:
        if len(data) - pos < 5:
            return MORE
        if data[pos] != 0x16 or data[pos + 1] != 3:
            return None
        size = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) - pos - 5 < size:
            out += data[pos + 5 :]
            return MORE if len(out) < 4 or len(out) < 4 + int.from_bytes(out[1:4], "big") else bytes(out)
        out += data[pos + 5 : pos + 5 + size]
        pos += 5 + size
        if len(out) >= 4 and len(out) >= 4 + int.from_bytes(out[1:4], "big"):
            return bytes(out)


def server_name(data: bytes) -> str | object | None:
    """The SNI of the ClientHello at the start of ``data``; ``None`` when there is none (not TLS, no
    server_name extension, malformed, or longer than ``MAX_HELLO``); ``MORE`` when more bytes are needed."""
    hs = _handshake(data)
    if hs is MORE:
        return MORE if len(data) < MAX_HELLO else None
    if not isinstance(hs, bytes) or hs[0] != 1:  # handshake type 1: ClientHello
        return None
    end = 4 + int.from_bytes(hs[1:4], "big")
    pos = 4 + 2 + 32  # legacy version, random
    try:
        pos += 1 + hs[pos]  # session id
        pos += 2 + int.from_bytes(hs[pos : pos + 2], "big")  # cipher suites
        pos += 1 + hs[pos]  # compression methods
        ext_end = min(end, pos + 2 + int.from_bytes(hs[pos : pos + 2], "big"))
        pos += 2
        while pos + 4 <= ext_end:
            kind = int.from_bytes(hs[pos : pos + 2], "big")
            size = int.from_bytes(hs[pos + 2 : pos + 4], "big")
            pos += 4
            if kind == 0:  # server_name: list length, then (type 0 host_name, length, name)
                if hs[pos + 2] != 0:
                    return None
                n = int.from_bytes(hs[pos + 3 : pos + 5], "big")
                name = hs[pos + 5 : pos + 5 + n]
                return name.decode("ascii").lower() if len(name) == n and n else None
            pos += size
    except (IndexError, UnicodeDecodeError):
        return None
    return None


__all__ = ["MAX_HELLO", "MORE", "server_name"]
