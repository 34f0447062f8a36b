"""The Java values Hessian carries that have no Python type of their own.

A plain ``int`` is written as a Java ``int`` when it fits (a ``long`` otherwise), ``float`` as a
``double``, ``str`` as a ``String``, ``bytes`` as ``byte[]``, ``list``/``tuple`` as an untyped list,
``dict`` as an untyped map (``HashMap``), an aware or naive-UTC ``datetime`` as a ``Date``. The
classes here say what Python cannot: a long, a typed list or map, an object of a named class.
Plain values only: no encoding here (``writer``), no decoding (``reader``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JavaLong", "JavaObject", "TypedList", "TypedMap"]


@dataclass(slots=True)
class JavaObject:
    """A Java object: its class name and its fields in declaration order (the wire order)."""

    class_name: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


@dataclass(frozen=True, slots=True)
class JavaLong:
    """Forces a Python int to be written as a Java ``long`` (plain ints that fit are ``int``)."""

    value: int


@dataclass(frozen=True, slots=True)
class TypedList:
    """A list written with a Java type name (``java.util.ArrayList``, ``[int``)."""

    items: Sequence[Any]
    type_name: str = ""


@dataclass(frozen=True, slots=True)
class TypedMap:
    """A map written with a Java type name (``java.util.TreeMap``): ``M`` instead of ``H``."""

    items: dict[Any, Any]
    type_name: str = ""
