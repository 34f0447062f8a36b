"""What an RPC call the transcoder made came back with: a value, or an exception's class and message."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RpcResult"]


@dataclass(frozen=True, slots=True)
class RpcResult:
    """A provider's answer: ``value`` when ``exception`` is empty; else the exception's Java class
    (or the protocol's status name) and its message. ``status`` is the frame's status: Dubbo's
    status byte, Bolt's response status."""

    status: int
    value: object = None
    exception: str = ""
    message: str = ""
