"""Which fields of which resource a connected proxy enforces: the one table of it.

xDS translation fills ``ENFORCED`` as it lands (a field path without indices, as ``spec`` shows it:
``http.route.destination.subset``, and who enforces it: ``sofamesh`` sidecars, ``envoy``,
proxyless ``grpc``). Every other field Pilot accepts is stored and validated only; ``sofamesh
analyze`` and ``docs/policy.md`` report it as such, never dropping it silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sofamesh.pilot.policy.kinds import KINDS, Kind
from sofamesh.pilot.policy.resource import Resource
from sofamesh.pilot.policy.schema import Bool, Duration, Enum, Int, ListOf, MapOf, Node, Num, Obj, Str

ENFORCERS = ("sofamesh", "envoy", "grpc")
ENFORCED: Mapping[str, Mapping[str, tuple[str, ...]]] = {}
"""kind -> field path -> enforcers. Empty until xDS translation of policy lands."""


def enforcers(kind: str, path: str) -> tuple[str, ...]:
    return ENFORCED.get(kind, {}).get(path, ())


def _inner(node: Node) -> Node:
    while isinstance(node, ListOf | MapOf):
        node = node.item if isinstance(node, ListOf) else node.value
    return node


def _leaves(value: Any, node: Node, prefix: str) -> Iterator[str]:
    inner = _inner(node)
    if not isinstance(inner, Obj):
        yield prefix
        return
    items: list[Any]
    if isinstance(node, ListOf):
        items = value if isinstance(value, list) else []
    elif isinstance(node, MapOf):
        items = list(value.values()) if isinstance(value, Mapping) else []
    else:
        items = [value]
    for item in items:
        if not isinstance(item, Mapping):
            continue
        for k, v in item.items():
            if k in inner.fields and v is not None:
                yield from _leaves(v, inner.fields[k], f"{prefix}.{k}" if prefix else k)


def used_fields(kind: Kind, spec: Mapping[str, Any]) -> list[str]:
    """The leaf field paths ``spec`` sets, without indices, sorted and unique."""
    return sorted(set(_leaves(spec, kind.schema, "")))


def unenforced(resource: Resource) -> list[str]:
    """The fields ``resource`` sets that no connected proxy enforces yet."""
    kind = next(k for k in KINDS if k.kind == resource.kind and k.group == resource.group)
    return [p for p in used_fields(kind, resource.spec) if not enforcers(resource.kind, p)]


def _shape(node: Node) -> str:
    if isinstance(node, ListOf):
        return f"list of {_shape(node.item)}"
    if isinstance(node, MapOf):
        return f"map of {_shape(node.value)}"
    if isinstance(node, Enum):
        return "enum: " + " ".join(node.values)
    if isinstance(node, Int):
        return "uint32" if node.lo == 0 else "int32"
    return {Obj: "object", Str: "string", Num: "number", Bool: "boolean", Duration: "duration"}.get(
        type(node), type(node).__name__)


def field_table(kind: Kind) -> list[tuple[str, str]]:
    """Every field path of ``kind`` and its type (for docs/policy.md)."""
    return [(path, _shape(node)) for path, node in kind.schema.paths()]


__all__ = ["ENFORCED", "ENFORCERS", "enforcers", "field_table", "unenforced", "used_fields"]
