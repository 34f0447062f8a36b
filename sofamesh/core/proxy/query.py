"""HTTP query parameter matching of a route (Envoy's ``query_parameters``): each named parameter
must be present and its first value match. The query is parsed only for routes that ask."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl


class QueryMatch:
    """``preds``: (parameter name, predicate on its value or ``None`` when absent)."""

    __slots__ = ("_preds",)

    def __init__(self, preds: tuple[tuple[str, Callable[[str | None], bool]], ...]) -> None:
        self._preds = preds

    def matches(self, path: str) -> bool:
        _, sep, query = path.partition("?")
        params: dict[str, str] = {}
        if sep:
            for k, v in parse_qsl(query, keep_blank_values=True):
                params.setdefault(k, v)
        return all(pred(params.get(name)) for name, pred in self._preds)


__all__ = ["QueryMatch"]
