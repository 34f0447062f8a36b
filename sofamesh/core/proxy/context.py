"""StreamContext: the per-request state filters read and write (identities, claims, timings, flags).
A plain value object: the stream makes one per request; filters and telemetry share it."""

from __future__ import annotations

from typing import Any


class StreamContext:
    """Per-request state filters read and write (identities, claims, timings, flags)."""

    __slots__ = ("_attrs", "cluster", "endpoint", "listener", "peer", "peer_identity", "request_principal",
                 "response_flags", "route", "start")

    def __init__(self, listener: str, peer: tuple[Any, ...], peer_identity: str | None, start: float) -> None:
        self.listener = listener
        self.peer = peer
        self.peer_identity = peer_identity
        self.request_principal: str | None = None
        self.start = start
        self.route = ""
        self.cluster = ""
        self.endpoint = ""
        self.response_flags = ""
        self._attrs: dict[str, Any] | None = None

    @property
    def attrs(self) -> dict[str, Any]:
        """Free-form per-request values filters share (claims, spans...); made on first use, since
        most streams never have one."""
        a = self._attrs
        if a is None:
            a = self._attrs = {}
        return a


__all__ = ["StreamContext"]
