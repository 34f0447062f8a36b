"""Connection: the asyncio.Protocol base for both sides. Owns the transport, write backpressure,
read gating and idle tracking. Subclasses decide what the bytes mean."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sofamesh.core.net.flow_control import ReadGate, WriteGate


class Connection(asyncio.Protocol):
    __slots__ = ("closed", "last_active", "loop", "peer", "read_gate", "transport", "write_gate")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.read_gate: ReadGate | None = None
        self.write_gate = WriteGate()
        self.closed = False
        self.peer: tuple[Any, ...] = ()
        self.last_active = loop.time()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.read_gate = ReadGate(transport)  # type: ignore[arg-type]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.peer = transport.get_extra_info("peername") or ()
        transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)  # type: ignore[attr-defined]

    def pause_writing(self) -> None:
        self.write_gate.block()

    def resume_writing(self) -> None:
        self.write_gate.unblock()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # Whoever was held back by our full write buffer may read again (and will see us gone).
        self.write_gate.unblock()

    # -- helpers for subclasses ----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed:
            t.write(data)

    def close(self) -> None:
        """Close after pending writes are flushed."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()


__all__ = ["Connection"]
