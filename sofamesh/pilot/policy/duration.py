"""Durations as Istio's resources write them: Go/Kubernetes style (``1.5s``, ``100ms``, ``1h30m``).

Pure parsing; the webhook rules about a duration's size live with the resources that use it.
"""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ``ValueError`` naming the text when it is not a duration.

    Accepts what Kubernetes' ``duration()`` accepts: one or more number+unit parts, units
    ``ns us µs ms s m h``, an optional leading sign (a negative duration parses; callers refuse it).
    """
    body = text.strip()
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"invalid duration {text!r} (use a number and a unit: 1.5s, 100ms, 1m, 1h)")
    return sign * total


def check_duration(text: str, minimum: float = 0.001) -> str | None:
    """Istio's webhook rule for a duration: at least ``minimum`` seconds (1 ms), whole milliseconds.

    Returns the problem, or ``None`` when the duration is acceptable.
    """
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        return str(exc)
    if seconds < minimum:
        return f"duration {text!r} must be at least {_show(minimum)}"
    if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
        return f"duration {text!r}: only durations to ms precision are supported"
    return None


def _show(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


__all__ = ["check_duration", "parse_duration"]
