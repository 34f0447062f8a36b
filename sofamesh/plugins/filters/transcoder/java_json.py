"""JSON values to the Hessian values of declared Java types, and decoded Hessian results to JSON.

Owns the mapping only: no HTTP, no RPC framing, no I/O. A JSON value that does not fit its declared
type is an ``ArgumentError`` naming the argument and the type (the edge answers it with a 400).
The mapping follows what Java's Jackson does for the same types, as Dubbo-go-pixiu does: a
``long`` from a JSON number or a string of digits, ``BigDecimal`` from a number or a string,
``Date`` from epoch milliseconds or an ISO 8601 string, ``byte[]`` from base64 or an array of
bytes, a POJO from a JSON object (its fields
untyped: JSON numbers become ``int`` when they fit, else ``long``, else ``double``); results come
back with a ``Date`` as epoch milliseconds, ``byte[]`` as base64 and a POJO as its fields.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sofamesh.core.errors import ProtocolError
from sofamesh.core.hessian import JavaLong, JavaObject, TypedList, TypedMap

__all__ = ["ArgumentError", "dubbo_descriptor", "java_type_error", "to_hessian", "to_json", "untyped"]

BIG_DECIMAL: Final = "java.math.BigDecimal"
BIG_INTEGER: Final = "java.math.BigInteger"

# Java name -> (range of an integral type, or None; boxed: null allowed)
_INTEGRAL: Final[dict[str, tuple[int, int]]] = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "int": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}
_BOXES: Final[dict[str, str]] = {
    "java.lang.Byte": "byte",
    "java.lang.Short": "short",
    "java.lang.Integer": "int",
    "java.lang.Long": "long",
    "java.lang.Float": "float",
    "java.lang.Double": "double",
    "java.lang.Boolean": "boolean",
    "java.lang.Character": "char",
}
_DESCRIPTOR: Final[dict[str, str]] = {
    "byte": "B",
    "short": "S",
    "int": "I",
    "long": "J",
    "float": "F",
    "double": "D",
    "boolean": "Z",
    "char": "C",
    "void": "V",
}
_LISTS: Final = frozenset(
    {
        "java.util.List",
        "java.util.ArrayList",
        "java.util.Collection",
        "java.util.LinkedList",
        "java.util.Set",
        "java.util.HashSet",
    }
)
_MAPS: Final = frozenset({"java.util.Map", "java.util.HashMap", "java.util.LinkedHashMap", "java.util.TreeMap"})
_STRINGS: Final = frozenset({"java.lang.String", "String", "java.lang.CharSequence"})
_OBJECT: Final = "java.lang.Object"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class ArgumentError(ProtocolError):
    """A JSON value that does not fit its declared Java type; an edge answers it with a 400."""

    def __init__(self, argument: str, java_type: str, found: str) -> None:
        super().__init__(f"argument {argument!r}: expected {java_type}, found {found}", status_hint=400)
        self.argument = argument
        self.java_type = java_type


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return "array" if isinstance(value, list) else "object"


_CLASS_NAME: Final = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")
_KNOWN_CLASSES: Final = frozenset(
    {*_BOXES, *_LISTS, *_MAPS, *_STRINGS, _OBJECT, BIG_DECIMAL, BIG_INTEGER, "java.util.Date"}
)


def java_type_error(java_type: str) -> str | None:
    """Why ``java_type`` cannot be declared for an argument, or None when it can: a primitive, a
    type of the mapping table, an array of one, or a POJO's fully qualified class name (outside
    ``java.``, whose classes the mapping names one by one)."""
    t = java_type.strip()
    while t.endswith("[]"):
        t = t[:-2]
    if (t in _DESCRIPTOR and t != "void") or t in _KNOWN_CLASSES:
        return None
    if _CLASS_NAME.fullmatch(t) and not t.startswith("java."):
        return None
    known = ", ".join(sorted(k for k in _DESCRIPTOR if k != "void"))
    return (
        f"unknown Java type {java_type!r} (known: {known}, their boxes, java.lang.String, BigDecimal, "
        "BigInteger, java.util.Date, byte[], List/Map types, java.lang.Object, arrays as T[], or a POJO's "
        "fully qualified class name)"
    )


def dubbo_descriptor(java_types: list[str]) -> str:
    """The Dubbo parameter-type descriptor (``Ljava/lang/String;I``) of declared Java types; array
    types are written ``int[]`` or ``java.lang.String[]``."""
    out = []
    for t in java_types:
        dims = 0
        while t.endswith("[]"):
            t, dims = t[:-2], dims + 1
        prim = _DESCRIPTOR.get(t)
        out.append("[" * dims + (prim if prim is not None else "L" + t.replace(".", "/") + ";"))
    return "".join(out)


def _integral(arg: str, java_type: str, kind: str, value: object) -> int:
    lo, hi = _INTEGRAL[kind]
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        n = int(value.strip())  # a long sent as a string: JSON numbers lose digits beyond 2**53
    if n is None or not lo <= n <= hi:
        raise ArgumentError(arg, java_type, _json_kind(value))
    return n


def untyped(value: object) -> object:
    """A JSON value with no declared type (a POJO's field, a list's item): the natural Java type."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -(2**31) <= value < 2**31 else JavaLong(value)
    if isinstance(value, list):
        return [untyped(v) for v in value]
    if isinstance(value, dict):
        return {k: untyped(v) for k, v in value.items()}
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def to_hessian(arg: str, java_type: str, value: object) -> object:
    """``value`` (parsed JSON) as the Hessian value of Java type ``java_type``, for ``HessianWriter``.
    Raises ``ArgumentError`` naming ``arg`` when it does not fit."""
    boxed = java_type in _BOXES
    kind = _BOXES.get(java_type, java_type)
    if value is None:
        if kind in _DESCRIPTOR:
            if not boxed:
                raise ArgumentError(arg, java_type, "null")
        return None
    if kind in _INTEGRAL:
        n = _integral(arg, java_type, kind, value)
        return JavaLong(n) if kind == "long" else n
    if kind in ("double", "float"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                x = float(value)
            except ValueError:
                raise ArgumentError(arg, java_type, _json_kind(value)) from None
            if not math.isnan(x):
                return x
        raise ArgumentError(arg, java_type, _json_kind(value))
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise ArgumentError(arg, java_type, _json_kind(value))
    if kind == "char":
        if isinstance(value, str) and len(value) == 1:
            return value
        raise ArgumentError(arg, java_type, _json_kind(value))
    if java_type in _STRINGS:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ArgumentError(arg, java_type, _json_kind(value))
    if java_type in (BIG_DECIMAL, BIG_INTEGER):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ArgumentError(arg, java_type, _json_kind(value))
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ArgumentError(arg, java_type, _json_kind(value)) from None
        if not number.is_finite() or (java_type == BIG_INTEGER and number != number.to_integral_value()):
            raise ArgumentError(arg, java_type, _json_kind(value))
        text = str(number) if java_type == BIG_DECIMAL else str(int(number))
        # Hessian's BigDecimal/BigInteger serializers write an object whose one field is the text.
        return JavaObject(java_type, {"value": text})
    if java_type == "java.util.Date":
        return _date(arg, java_type, value)
    if java_type == "byte[]":  # binary: base64 text, as Jackson writes byte[], or an array of bytes
        return _binary(arg, java_type, value)
    if java_type in _LISTS or java_type.endswith("[]"):
        if not isinstance(value, list):
            raise ArgumentError(arg, java_type, _json_kind(value))
        if java_type.endswith("[]"):
            item_type = java_type[:-2]
            items = [to_hessian(f"{arg}[{i}]", item_type, v) for i, v in enumerate(value)]
            return TypedList(items, "[" + _array_item_name(item_type))
        return [untyped(v) for v in value]
    if java_type in _MAPS:
        if not isinstance(value, dict):
            raise ArgumentError(arg, java_type, _json_kind(value))
        return (
            untyped(value)
            if java_type in ("java.util.Map", "java.util.HashMap")
            else TypedMap({k: untyped(v) for k, v in value.items()}, java_type)
        )
    if java_type == _OBJECT:
        return untyped(value)
    # A POJO: a JSON object becomes an object of the declared class, its fields untyped.
    if not isinstance(value, dict):
        raise ArgumentError(arg, java_type, _json_kind(value))
    return JavaObject(java_type, {k: untyped(v) for k, v in value.items()})


def _binary(arg: str, java_type: str, value: object) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ArgumentError(arg, java_type + " (base64)", _json_kind(value)) from None
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and -128 <= b <= 255 for b in value
    ):
        return bytes(b & 0xFF for b in value)
    raise ArgumentError(arg, java_type + " (base64 or an array of bytes)", _json_kind(value))


def _array_item_name(item_type: str) -> str:
    # Hessian names arrays by their item type: "[int", "[string", "[object", or "[com.example.T".
    if item_type in _DESCRIPTOR:
        return item_type
    if item_type in _STRINGS:
        return "string"
    return "object" if item_type == _OBJECT else item_type


def _date(arg: str, java_type: str, value: object) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, ValueError, OSError):
            raise ArgumentError(arg, java_type, _json_kind(value)) from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ArgumentError(arg, java_type + " (epoch milliseconds or ISO 8601)", _json_kind(value)) from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise ArgumentError(arg, java_type + " (epoch milliseconds or ISO 8601)", _json_kind(value))


def to_json(value: object) -> Any:
    """A decoded Hessian value (``HessianReader.read``) as JSON-ready Python: a POJO is its fields,
    a ``BigDecimal`` / ``BigInteger`` its digits as a string, a ``Date`` epoch milliseconds,
    ``byte[]`` base64, a long beyond 2**53 a string (JSON readers lose its digits otherwise)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**53) < value < 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, JavaObject):
        if value.class_name in (BIG_DECIMAL, BIG_INTEGER) and isinstance(value.fields.get("value"), str):
            return value.fields["value"]
        return {k: to_json(v) for k, v in value.fields.items()}
    if isinstance(value, TypedList):
        return [to_json(v) for v in value.items]
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, TypedMap):
        return {str(k): to_json(v) for k, v in value.items.items()}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return str(value)
