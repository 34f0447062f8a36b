"""Multi-document Kubernetes YAML (or JSON) text -> documents, each with its :class:`Source`:
the document's position in the stream and the line of every field, so errors can point at them."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from sofamesh.core.config.yaml_text import safe_loader
from sofamesh.pilot.policy.schema import child, entry


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a stream: its parsed body (``None`` when it is empty) or the syntax problem
    that stopped the parse, and where it starts."""

    body: Any
    document: int
    line: int
    lines: dict[str, int]
    problem: str | None = None


def _walk(node: yaml.Node, path: str, lines: dict[str, int], in_map: bool = False) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = str(k.value)
            sub = entry(path, key) if in_map else child(path, key)
            lines[sub] = k.start_mark.line + 1
            # a mapping under a known map-valued field is keyed by user names: headers[end-user]
            _walk(v, sub, lines, in_map=key in _MAP_FIELDS)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, child(path, i), lines)


# Fields whose values are maps of user-chosen keys (paths show them as ``field[key]``).
_MAP_FIELDS = frozenset({"labels", "annotations", "matchLabels", "headers", "withoutHeaders", "queryParams",
                         "sourceLabels", "set", "add", "attributes", "ports", "portLevelMtls", "to"})


def _string_keys(value: Any) -> Any:
    """Integer map keys as strings, as kubectl sends YAML to the API server as JSON: Istio's own
    examples write ``portLevelMtls: {8080: {mode: DISABLE}}``. An unquoted timestamp (YAML reads
    ``creationTimestamp: 2024-05-01T00:00:00Z`` as one) becomes its RFC 3339 string, as in JSON."""
    if isinstance(value, datetime.date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: _string_keys(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def parse_stream(text: str) -> Iterator[Document]:
    """Each non-empty document of ``text``; a YAML error ends the stream with a document carrying
    the ``problem`` (its line, and the documents before it, are still returned)."""
    index = 0
    loader: yaml.SafeLoader | None = None
    try:
        loader = safe_loader(text)  # may refuse a non-printable character before the first document
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            body = _string_keys(loader.construct_document(node))
            if body is None:
                continue
            lines: dict[str, int] = {}
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    key = str(k.value)
                    lines[key] = k.start_mark.line + 1
                    _walk(v, key, lines, in_map=False)
            yield Document(body, index, node.start_mark.line + 1, lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        yield Document(None, index + 1, line, {}, problem=f"not valid YAML: {exc}")
    finally:
        if loader is not None:
            loader.dispose()


__all__ = ["Document", "parse_stream"]
