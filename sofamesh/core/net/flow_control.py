"""Backpressure gates. Reading resumes only when every owner that paused it has released it."""

from __future__ import annotations

import asyncio


class ReadGate:
    """Pauses a transport's reading on behalf of several owners."""

    __slots__ = ("_owners", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._owners: set[int] = set()

    def pause(self, owner: object) -> None:
        first = not self._owners
        self._owners.add(id(owner))
        if first and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume(self, owner: object) -> None:
        if id(owner) in self._owners:
            self._owners.discard(id(owner))
            if not self._owners and not self._transport.is_closing():
                self._transport.resume_reading()

    @property
    def paused(self) -> bool:
        return bool(self._owners)


class WriteGate:
    """Tracks the transport's write buffer (asyncio's pause/resume_writing) and who waits on it."""

    __slots__ = ("_waiters", "_waker", "blocked")

    def __init__(self) -> None:
        # read on every forwarded request: a plain attribute (a property call costs more than the
        # check); only ``block``/``unblock`` change it
        self.blocked = False
        self._waiters: list[ReadGate] = []
        self._waker: asyncio.Future[None] | None = None

    def block(self) -> None:
        self.blocked = True

    def unblock(self) -> None:
        self.blocked = False
        waiters, self._waiters = self._waiters, []
        for gate in waiters:
            gate.resume(self)
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)
        self._waker = None

    def hold(self, gate: ReadGate) -> None:
        """Pause ``gate`` (a feeder's reading) until this write buffer drains."""
        gate.pause(self)
        self._waiters.append(gate)

    async def drained(self) -> None:
        if not self.blocked:
            return
        if self._waker is None:
            self._waker = asyncio.get_running_loop().create_future()
        await self._waker


__all__ = ["ReadGate", "WriteGate"]
