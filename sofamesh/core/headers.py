"""Header collections shared by codecs: an ordered multi-map with case-insensitive lookup."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class Headers:
    """Ordered (name, value) pairs. Lookup ignores case; iteration keeps the wire order and case.

    Used for HTTP headers, Bolt header maps and Dubbo attachments alike. Names and values are ``str``.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> Headers:
        return cls(mapping.items())

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for k, v in self._items:
            if k.lower() == lname:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(tuple(self._items))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def with_set(self, name: str, value: str) -> Headers:
        """A copy where every ``name`` is replaced by one ``name: value`` at the first position."""
        lname = name.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for k, v in self._items:
            if k.lower() == lname:
                if not placed:
                    out.append((k, value))
                    placed = True
            else:
                out.append((k, v))
        if not placed:
            out.append((name, value))
        return Headers(out)

    def without(self, names: Iterable[str]) -> Headers:
        drop = {n.lower() for n in names}
        return Headers((k, v) for k, v in self._items if k.lower() not in drop)


__all__ = ["Headers"]
