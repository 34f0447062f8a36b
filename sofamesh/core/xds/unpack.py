"""A nested ``google.protobuf.Any`` -> its message, and a ``TypedStruct``'s value -> JSON, or a
``ConfigError`` naming the field: a typed config of another type, bytes that do not parse as the
type they claim, a Struct that is no JSON (NaN, infinity). Protobuf raises its own ``DecodeError`` /
``ValueError`` there, which would end the xDS stream instead of NACKing the resource."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from sofamesh.core.errors import ConfigError

M = TypeVar("M", bound=Message)


def unpack(any_msg: Any, msg: M, path: str) -> M:
    """Fill ``msg`` from ``any_msg``; raise ``ConfigError(path)`` when it is another type or malformed."""
    try:
        ok = any_msg.Unpack(msg)
    except DecodeError as exc:
        raise ConfigError(path, f"cannot decode {msg.DESCRIPTOR.full_name}: {exc}") from None
    if not ok:
        raise ConfigError(path, f"expected {msg.DESCRIPTOR.full_name}, got {any_msg.type_url}")
    return msg


def try_unpack(any_msg: Any, msg: Message, path: str) -> bool:
    """``any_msg.Unpack(msg)`` (False: another type), a ``ConfigError(path)`` when its bytes do not parse."""
    try:
        return bool(any_msg.Unpack(msg))
    except DecodeError as exc:
        raise ConfigError(path, f"cannot decode {msg.DESCRIPTOR.full_name}: {exc}") from None


def struct_value(value: Any, path: str) -> Any:
    """A ``google.protobuf.Struct`` as JSON; ``ConfigError(path)`` when it holds no JSON value (NaN)."""
    try:
        return json_format.MessageToDict(value)
    except ValueError as exc:
        raise ConfigError(path, f"not a JSON value: {exc}") from None


__all__ = ["struct_value", "try_unpack", "unpack"]
