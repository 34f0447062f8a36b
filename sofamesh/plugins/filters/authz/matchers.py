"""Istio's value matching, compiled once: ``"abc"`` exact, ``"abc*"`` prefix, ``"*abc"`` suffix,
``"*"`` any non-empty value; and IP blocks (``10.0.0.0/8`` or a single address)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

ValueMatch = Callable[[str], bool]


def values(patterns: Sequence[str]) -> ValueMatch:
    """True when a value matches any of ``patterns``."""
    exact = frozenset(p for p in patterns if "*" not in p)
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*") and p != "*")
    suffixes = tuple(p[1:] for p in patterns if p.startswith("*") and p != "*")
    if "*" in patterns:
        return bool  # any non-empty value
    if not prefixes and not suffixes:
        return (exact - {""}).__contains__  # exact values only: one set lookup; "" never matches

    def match(v: str) -> bool:
        if not v:
            return False
        if v in exact:
            return True
        return (bool(prefixes) and v.startswith(prefixes)) or (bool(suffixes) and v.endswith(suffixes))

    return match


_IP_CACHE_SIZE = 4096  # distinct peer addresses remembered per matcher before the memo starts over


def ip_blocks(blocks: Sequence[str]) -> ValueMatch:
    """True when an address is in any of ``blocks``. Answers are memoised per address: parsing an
    address and testing it against networks costs ~5 µs, and a connection's requests share one peer."""
    nets = [ipaddress.ip_network(b, strict=False) for b in blocks]
    seen: dict[str, bool] = {}

    def match(v: str) -> bool:
        hit = seen.get(v)
        if hit is not None:
            return hit
        if not v:
            return False
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            ok = False
        else:
            ok = any(ip in n for n in nets)
        if len(seen) >= _IP_CACHE_SIZE:
            seen.clear()
        seen[v] = ok
        return ok

    return match


__all__ = ["ValueMatch", "ip_blocks", "values"]
