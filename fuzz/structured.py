"""Structured values built from a fuzzer's bytes, to feed a validator directly (no YAML text).

A YAML mutation mostly breaks the syntax; a value built here is always well formed, so every
execution reaches the validation. Keys and strings come mostly from a vocabulary (the keys and
scalars of the seed documents), so the fields a validator knows are met often; the rest are raw
strings, edge numbers (huge, negative, NaN, infinities), booleans and nulls, at any depth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import yaml

MAX_DEPTH = 8
MAX_ITEMS = 6
_EDGE_NUMBERS: tuple[int | float, ...] = (
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    2**32,
    2**63,
    -(2**63),
    10**30,
    65535,
    65536,
    0.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    1e-9,
    100,
    101,
)


def vocabulary(texts: Iterable[str]) -> tuple[str, ...]:
    """Every mapping key and string scalar of the YAML ``texts`` (sorted, each once)."""
    words: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                words.add(str(k))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) <= 80:
            words.add(value)

    for text in texts:
        try:
            for doc in yaml.safe_load_all(text):
                walk(doc)
        except yaml.YAMLError:
            continue
    return tuple(sorted(words))


class Builder:
    """Reads ``data`` front to back; an exhausted input yields empty / null values."""

    __slots__ = ("data", "pos", "words")

    def __init__(self, data: bytes, words: tuple[str, ...]) -> None:
        self.data = data
        self.pos = 0
        self.words = words or ("",)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def word(self) -> str:
        return self.words[(self.byte() << 8 | self.byte()) % len(self.words)]

    def raw(self) -> str:
        n = self.byte() % 24
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk.decode("utf-8", "replace")

    def key(self) -> Any:
        b = self.byte()
        if b < 200:
            return self.word()
        if b < 240:
            return self.raw()
        return self.byte() - 1 if b < 250 else None  # YAML allows integer and null keys

    def mapping(self, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for _ in range(self.byte() % (MAX_ITEMS + 1)):
            if self.done():
                break
            out[self.key()] = self.value(depth + 1)
        return out

    def value(self, depth: int = 0) -> Any:
        if self.done():
            return None
        op = self.byte()
        kind = op % 10 if depth < MAX_DEPTH else 2 + op % 8
        if kind == 0:
            return self.mapping(depth)
        if kind == 1:
            return [self.value(depth + 1) for _ in range(self.byte() % (MAX_ITEMS + 1))]
        if kind in (2, 3, 4):
            return self.word()
        if kind == 5:
            return self.raw()
        if kind == 6:
            return _EDGE_NUMBERS[self.byte() % len(_EDGE_NUMBERS)]
        if kind == 7:
            return int.from_bytes(bytes(self.byte() for _ in range(1 + op % 4)), "big", signed=op & 0x80 != 0)
        if kind == 8:
            return bool(op & 0x10)
        return None


__all__ = ["Builder", "vocabulary"]
