"""A small structural schema for policy resources: what the Kubernetes API server checks with a
CRD's OpenAPI schema (unknown fields, types, enums, ranges, required fields, oneOf groups).

The rules Istio's validating webhook adds on top (weights, conflicting fields, regexes) live in
the module of each API group. Checking is pure: a value and a path in, issues into a
:class:`Report` out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sofamesh.pilot.policy.duration import parse_duration


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a document: the field path (``spec.http[0].timeout``) and what is wrong."""

    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message, "severity": "warning" if self.warning else "error"}


@dataclass
class Report:
    """Issues collected while checking one document."""

    issues: list[Issue] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def warn(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message, warning=True))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if not i.warning]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.warning]


def child(path: str, key: str | int) -> str:
    """``spec`` + ``http`` -> ``spec.http``; + 0 -> ``spec.http[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def entry(path: str, key: str) -> str:
    """A map entry: ``spec.http[0].match[0].headers[end-user]``."""
    return f"{path}[{key}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


class Node:
    """A schema node. ``check`` adds an issue to ``report`` for each problem in ``value``."""

    type_name = "any"
    doc = ""

    def check(self, value: Any, path: str, report: Report) -> None:
        raise NotImplementedError

    def _wrong_type(self, value: Any, path: str, report: Report) -> None:
        shown = repr(value) if not isinstance(value, Mapping | list) else _type_name(value)
        report.error(path, f"must be of type {self.type_name}, got {_type_name(value)} {shown}")


class AnyValue(Node):
    """Free-form (``status``, opaque extension config)."""

    def check(self, value: Any, path: str, report: Report) -> None:
        return None


class Str(Node):
    type_name = "string"

    def __init__(self, pattern: str | None = None, what: str = "", max_len: int | None = None) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.what = what
        self.max_len = max_len

    def check(self, value: Any, path: str, report: Report) -> None:
        if not isinstance(value, str):
            self._wrong_type(value, path, report)
            return
        if self.max_len is not None and len(value) > self.max_len:
            report.error(path, f"must be at most {self.max_len} characters, got {len(value)}")
        elif self.pattern is not None and not self.pattern.fullmatch(value):
            report.error(path, f"invalid {self.what or 'value'} {value!r}")


class Int(Node):
    """An integer in [lo, hi] (int32 by default; ``UINT32`` for unsigned fields)."""

    type_name = "integer"

    def __init__(self, lo: int = -(2**31), hi: int = 2**31 - 1) -> None:
        self.lo, self.hi = lo, hi

    def check(self, value: Any, path: str, report: Report) -> None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong_type(value, path, report)
        elif not self.lo <= value <= self.hi:
            report.error(path, f"must be between {self.lo} and {self.hi}, got {value}")


def UInt32() -> Int:  # reads like the proto type it stands for
    return Int(0, 2**32 - 1)


class Num(Node):
    type_name = "number"

    def check(self, value: Any, path: str, report: Report) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self._wrong_type(value, path, report)


class Bool(Node):
    type_name = "boolean"

    def check(self, value: Any, path: str, report: Report) -> None:
        if not isinstance(value, bool):
            self._wrong_type(value, path, report)


class Duration(Node):
    """A duration string (``1.5s``, ``100ms``); Istio's rules on its size are the webhook's."""

    type_name = "string"

    def check(self, value: Any, path: str, report: Report) -> None:
        if not isinstance(value, str):
            self._wrong_type(value, path, report)
            return
        try:
            parse_duration(value)
        except ValueError as exc:
            report.error(path, str(exc))


class Enum(Node):
    type_name = "string"

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, value: Any, path: str, report: Report) -> None:
        if not isinstance(value, str):
            self._wrong_type(value, path, report)
        elif value not in self.values:
            report.error(path, f"unsupported value {value!r}: supported values: {', '.join(self.values)}")


class ListOf(Node):
    type_name = "array"

    def __init__(self, item: Node) -> None:
        self.item = item

    def check(self, value: Any, path: str, report: Report) -> None:
        if not isinstance(value, list):
            self._wrong_type(value, path, report)
            return
        for i, v in enumerate(value):
            self.item.check(v, child(path, i), report)


class MapOf(Node):
    type_name = "object"

    def __init__(self, value: Node, key: Str | None = None) -> None:
        self.value = value
        self.key = key

    def check(self, value: Any, path: str, report: Report) -> None:
        if not isinstance(value, Mapping):
            self._wrong_type(value, path, report)
            return
        for k, v in value.items():
            p = entry(path, str(k))
            if not isinstance(k, str):
                report.error(p, f"map keys must be strings, got {_type_name(k)} {k!r}")
                continue
            if self.key is not None:
                self.key.check(k, p, report)
            self.value.check(v, p, report)


class Obj(Node):
    """An object with known fields. ``oneof`` groups: at most one field of each group may be set
    (a proto ``oneof``)."""

    type_name = "object"

    def __init__(self, fields: Mapping[str, Node], required: Sequence[str] = (),
                 oneof: Sequence[Sequence[str]] = (), deprecated: Sequence[str] = ()) -> None:
        self.fields = dict(fields)
        self.required = tuple(required)
        self.oneof = tuple(tuple(g) for g in oneof)
        self.deprecated = tuple(deprecated)

    def check(self, value: Any, path: str, report: Report) -> None:
        if not isinstance(value, Mapping):
            self._wrong_type(value, path, report)
            return
        for k, v in value.items():
            p = child(path, str(k))
            node = self.fields.get(k) if isinstance(k, str) else None
            if node is None:
                report.error(p, f'unknown field "{k}"')
                continue
            if v is None:
                continue  # an explicit null is the field left unset, as the API server prunes it
            node.check(v, p, report)
            if k in self.deprecated:
                report.warn(p, "deprecated field")
        for k in self.required:
            if value.get(k) is None:
                report.error(child(path, k), "required field is missing")
        for group in self.oneof:
            set_ = [k for k in group if value.get(k) is not None]
            if len(set_) > 1:
                report.error(path, f"only one of {', '.join(group)} may be set, got {', '.join(set_)}")

    def paths(self, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Every field path under this object, without indices (``http.route.destination.host``)."""
        for name, node in self.fields.items():
            p = f"{prefix}.{name}" if prefix else name
            yield p, node
            inner: Node = node
            while isinstance(inner, ListOf | MapOf):
                inner = inner.item if isinstance(inner, ListOf) else inner.value
            if isinstance(inner, Obj) and inner is not self:
                yield from inner.paths(p)


DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


def is_dns1123_label(value: str) -> bool:
    return bool(re.fullmatch(DNS1123_LABEL, value))


__all__ = [
    "DNS1123_LABEL",
    "DNS1123_SUBDOMAIN",
    "AnyValue",
    "Bool",
    "Duration",
    "Enum",
    "Int",
    "Issue",
    "ListOf",
    "MapOf",
    "Node",
    "Num",
    "Obj",
    "Report",
    "Str",
    "UInt32",
    "child",
    "entry",
    "is_dns1123_label",
]
