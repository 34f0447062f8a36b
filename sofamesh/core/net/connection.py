"""Connection: the asyncio.Protocol base for both sides. Owns the transport, write backpressure,
read gating, idle tracking and write batching. Subclasses decide what the bytes mean."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sofamesh.core.net.flow_control import ReadGate, WriteGate
from sofamesh.core.net.timers import DeadlineWheel, wheel_for


class WriteBatch:
    """Coalesces writes: a connection written to N times during ``batch.begin()`` ...
    ``batch.end()`` gets one ``transport.write`` (one syscall), not N.

    One per event loop (``batch_for``); reads do not nest across connections, so a depth counter is
    enough. With 16 Bolt frames in one read this turns 32 sends into 2.

    The connections' reads go further (``end_read``): what they write is flushed once the loop has
    handled every read that was ready together (a ``call_soon``, which runs after the current round
    of I/O callbacks and before the next poll), so 32 clients each sending one request through one
    multiplexed upstream connection cost one upstream send, not 32. A connection with bytes waiting
    for that flush queues every later write behind them, so order is kept.

    When requests come one at a time (each of the two rounds before had a single read that wrote,
    and it began or finished at most one call),
    nothing can join the batch: the read's writes go out at its end (``end_read``), and a stream
    whose answer is complete sends it before its bookkeeping (``send_now``), so the peer has the
    bytes while the proxy finishes the request. The round's ``call_soon`` is still queued, to count
    the round's reads: a second read in the round is batched as before, and so is the next round.
    """

    __slots__ = ("calls", "depth", "dirty", "loop", "reads", "scheduled", "sent", "serial", "singles")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.depth = 0
        self.dirty: list[Connection] = []
        self.scheduled = False  # a flush is queued with call_soon
        self.reads = 0  # reads that wrote in the current round
        self.calls = 0  # calls begun (``Stream.start``) or answered whole (``send_now``) in the round
        self.singles = 0  # rounds in a row with one such read
        self.serial = False  # the last two rounds had one such read each: write through
        self.sent = False  # the current read sent early (``send_now``)

    def begin(self) -> None:
        self.depth += 1

    def end(self) -> None:
        """Leave a batch; at depth 0 everything written goes out now."""
        self.depth -= 1
        if not self.depth and self.dirty:
            self.write_out()

    def end_read(self) -> None:
        """Leave a batch opened for a read; at depth 0 everything written goes out once the loop
        is done with this round of reads, or now if this read is the round's first and requests
        come one at a time."""
        self.depth -= 1
        if not self.depth and (self.dirty or self.sent):
            self.sent = False
            self.reads += 1
            if not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self.flush)
                if self.serial:
                    self.write_out()

    def send_now(self) -> None:
        """A stream's answer is written whole: when requests come one at a time and this read is
        the round's first, send what it wrote now, before the stream's bookkeeping. A round whose
        reads begin or finish several calls (16 in flight on one connection) is not one at a time."""
        self.calls += 1
        if self.serial and self.depth and not self.scheduled and not self.sent and self.dirty:
            self.sent = True
            self.write_out()

    def write_out(self) -> None:
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()

    def flush(self) -> None:
        """The round is over: write out every connection written to in the batch."""
        self.scheduled = False
        if self.reads == 1 and self.calls <= 1:
            self.singles += 1
            self.serial = self.singles >= 2
        else:
            self.singles = 0
            self.serial = False
        self.reads = self.calls = 0
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
    __slots__ = ("batch", "closed", "last_active", "loop", "peer", "read_gate", "transport", "tx", "wbuf", "wheel",
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
        self.tx = 0  # writes so far: an idle check sees whether any happened since it last looked

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
        """Send ``data``; inside a ``WriteBatch`` (or behind bytes still waiting for its flush) it
        goes out with the rest when the batch is flushed."""
        t = self.transport
        if t is None or self.closed:
            return
        self.tx += 1
        buf = self.wbuf
        if buf is not None:  # bytes wait for the batch's flush: queue behind them
            buf.append(data)
        elif self.batch.depth:
            self.wbuf = [data]
            self.batch.dirty.append(self)
        else:
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
