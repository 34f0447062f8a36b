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
    anything = "*" in patterns

    def match(v: str) -> bool:
        if not v:
            return False
        if anything or v in exact:
            return True
        return (bool(prefixes) and v.startswith(prefixes)) or (bool(suffixes) and v.endswith(suffixes))

    return match


def ip_blocks(blocks: Sequence[str]) -> ValueMatch:
    nets = [ipaddress.ip_network(b, strict=False) for b in blocks]

    def match(v: str) -> bool:
        if not v:
            return False
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            return False
        return any(ip in n for n in nets)

    return match


__all__ = ["ValueMatch", "ip_blocks", "values"]
