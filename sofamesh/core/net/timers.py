"""Coarse deadlines for the hot path: a timer wheel with one loop timer per occupied tick.

A request timeout is armed on every request and almost never fires. ``loop.call_later`` per request
allocates a timer handle and pushes it on the loop's heap (and, under uvloop, starts a libuv timer);
here arming is a dict insert into the slot of the tick the deadline falls in, cancelling is a dict
pop, and only the first deadline of a tick schedules a loop callback. Deadlines fire at most one
tick late and never early.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Expires(Protocol):
    def on_deadline(self) -> None: ...


TICK_S = 0.01  # 10 ms: request timeouts are configured in milliseconds, and well above this


class DeadlineWheel:
    __slots__ = ("last_key", "last_slot", "loop", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, dict[Expires, None]] = {}
        # The slot armed last: the requests of one burst share a tick, and most of them end before
        # the next tick's first request, so arming and cancelling mostly find it without a lookup.
        self.last_key = 0
        self.last_slot: dict[Expires, None] = {}

    def arm(self, owner: Expires, deadline: float) -> int:
        """Call ``owner.on_deadline()`` at or soon after loop time ``deadline``; returns the key
        ``cancel`` needs."""
        key = int(deadline / TICK_S) + 1
        if key == self.last_key:
            self.last_slot[owner] = None
            return key
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = {}
            self.loop.call_at(key * TICK_S, self._fire, key)
        slot[owner] = None
        self.last_key = key
        self.last_slot = slot
        return key

    def cancel(self, owner: Expires, key: int) -> None:
        if key == self.last_key:
            self.last_slot.pop(owner, None)
            return
        slot = self.slots.get(key)
        if slot is not None:
            slot.pop(owner, None)

    def _fire(self, key: int) -> None:
        if key == self.last_key:  # a key never comes back once its tick fired
            self.last_key = 0
            self.last_slot = {}
        slot = self.slots.pop(key, None)
        if slot:
            for owner in list(slot):
                owner.on_deadline()


_wheels: dict[int, DeadlineWheel] = {}


def wheel_for(loop: asyncio.AbstractEventLoop) -> DeadlineWheel:
    w = _wheels.get(id(loop))
    if w is None or w.loop is not loop:
        w = _wheels[id(loop)] = DeadlineWheel(loop)
    return w


__all__ = ["DeadlineWheel", "Expires", "wheel_for"]
