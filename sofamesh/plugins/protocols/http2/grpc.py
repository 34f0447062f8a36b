"""gRPC wire conventions carried in HTTP/2 headers: grpc-timeout, grpc-status, grpc-message.

Pure functions, no I/O. References: gRPC "PROTOCOL-HTTP2.md" (timeout units, percent-encoded
grpc-message) and its HTTP-to-gRPC status mapping, used here in reverse for stats and bridging.
"""

from __future__ import annotations

from typing import Final

_TIMEOUT_UNITS_NS: Final = {
    "H": 3_600_000_000_000, "M": 60_000_000_000, "S": 1_000_000_000, "m": 1_000_000, "u": 1_000, "n": 1,
}

# gRPC status code -> HTTP status with the same meaning (Envoy's grpc->http mapping).
_GRPC_TO_HTTP: Final = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}


def is_grpc(content_type: str | None) -> bool:
    """Whether a request or response content-type is gRPC (or Triple, which uses the same types)."""
    return content_type is not None and content_type[:16].lower() == "application/grpc"


def parse_timeout(value: str | None) -> int | None:
    """``grpc-timeout`` (1-8 digits and a unit H/M/S/m/u/n) in whole milliseconds, rounded up;
    ``None`` when absent or malformed (a malformed deadline is ignored, as grpc-go does)."""
    if not value or len(value) < 2 or len(value) > 9:
        return None
    digits, unit = value[:-1], value[-1]
    scale = _TIMEOUT_UNITS_NS.get(unit)
    if scale is None or not digits.isdigit() or not digits.isascii():
        return None
    return -(-int(digits) * scale // 1_000_000)


def format_timeout(timeout_ms: int) -> str:
    """A ``grpc-timeout`` value for ``timeout_ms``: the finest unit whose value fits in 8 digits,
    rounded up so the deadline never shrinks."""
    if timeout_ms < 0:
        raise ValueError(f"grpc timeout must be >= 0 ms, got {timeout_ms}")
    for unit, per in (("m", 1), ("S", 1_000), ("M", 60_000), ("H", 3_600_000)):
        value = -(-timeout_ms // per)
        if value < 100_000_000:
            return f"{value}{unit}"
    return "99999999H"


def http_status_of(grpc_status: int) -> int:
    """The HTTP status that means the same as ``grpc_status`` (unknown codes are 500)."""
    return _GRPC_TO_HTTP.get(grpc_status, 500)


def encode_message(message: str) -> str:
    """Percent-encode ``grpc-message``: UTF-8, every byte outside 0x20..0x7e and ``%`` escaped."""
    out: list[str] = []
    for b in message.encode("utf-8"):
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def decode_message(value: str) -> str:
    """The text of a percent-encoded ``grpc-message`` (bad escapes are kept as they are)."""
    if "%" not in value:
        return value
    raw = bytearray()
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "%" and i + 2 < n and _is_hex(value[i + 1 : i + 3]):
            raw.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            raw += c.encode("utf-8")
            i += 1
    return raw.decode("utf-8", errors="replace")


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in s)


__all__ = ["decode_message", "encode_message", "format_timeout", "http_status_of", "is_grpc", "parse_timeout"]
