"""Connection: the asyncio.Protocol base for both sides. Owns the transport, write backpressure,
read gating, idle tracking and write batching. Subclasses decide what the bytes mean."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sofamesh.core.net.flow_control import ReadGate, WriteGate
from sofamesh.core.net.timers import DeadlineWheel, wheel_for


class WriteBatch:
    """Coalesces the writes made while one read is handled: a connection written to N times during
    ``batch.begin()`` ... ``batch.end()`` gets one ``transport.write`` (one syscall), not N.

    One per event loop (``batch_for``); reads do not nest across connections, so a depth counter is
    enough. With 16 Bolt frames in one read this turns 32 sends into 2."""

    __slots__ = ("depth", "dirty", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.depth = 0
        self.dirty: list[Connection] = []

    def begin(self) -> None:
        self.depth += 1

    def end(self) -> None:
        self.depth -= 1
        if not self.depth and self.dirty:
            self.flush()

    def flush(self) -> None:
        """Write out every connection written to in the batch (``end`` does it at depth 0)."""
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()


_batches: dict[int, WriteBatch] = {}


def batch_for(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    b = _batches.get(id(loop))
    if b is None or b.loop is not loop:
        b = _batches[id(loop)] = WriteBatch(loop)
    return b


class Connection(asyncio.Protocol):
    __slots__ = ("batch", "closed", "last_active", "loop", "peer", "read_gate", "transport", "wbuf", "wheel",
                 "write_gate")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.batch = batch_for(loop)
        self.wheel: DeadlineWheel = wheel_for(loop)  # the loop's request deadlines, looked up once
        self.wbuf: list[bytes] | None = None
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
        """Send ``data``; inside a ``WriteBatch`` it goes out with the rest when the batch ends."""
        t = self.transport
        if t is None or self.closed:
            return
        if self.batch.depth:
            buf = self.wbuf
            if buf is None:
                self.wbuf = [data]
                self.batch.dirty.append(self)
            else:
                buf.append(data)
            return
        t.write(data)

    def flush(self) -> None:
        buf, self.wbuf = self.wbuf, None
        t = self.transport
        if buf and t is not None and not self.closed:
            t.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def close(self) -> None:
        """Close after pending writes are flushed."""
        if self.transport is not None and not self.closed:
            if self.wbuf:
                self.flush()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.wbuf = None
        if self.transport is not None:
            self.closed = True
            self.transport.abort()


__all__ = ["Connection", "WriteBatch", "batch_for"]
