"""Fences: a replica catches up with its shared stores before it answers a proxy that just connected.

Pilot replicas follow etcd or ZooKeeper through watches, which lag the store by a few milliseconds.
A proxy that fails over from replica A right after a write through A must not get from replica B the
config before that write. So a new ADS stream's first request waits for a fence: every store reports
that its watch has delivered everything the store held when the fence began (etcd: a write the
replica then sees through its own watch; ZooKeeper: ``sync()`` and the watch events before it), and
the push those events started is not left waiting for the debounce timer.

One fence serves every stream that arrived before it started, so a burst of reconnecting proxies
costs one or two round trips to the store, not one each. This module owns only that coalescing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Fence:
    """Runs ``work`` for callers of :meth:`wait`; a caller shares the first run that starts after it
    called (a run already under way may have begun before the caller's store write: it waits for the
    next one)."""

    def __init__(self, work: Callable[[], Awaitable[None]]) -> None:
        self._work = work
        self._next: asyncio.Future[None] | None = None
        self._running: asyncio.Task[None] | None = None
        self.runs = 0

    async def wait(self) -> None:
        """Return once a run that started after this call has finished (its error is raised)."""
        fut = self._next
        if fut is None:
            fut = self._next = asyncio.get_running_loop().create_future()
            if self._running is None:
                self._start()
        await asyncio.shield(fut)

    def _start(self) -> None:
        fut, self._next = self._next, None
        assert fut is not None
        self._running = asyncio.get_running_loop().create_task(self._run(fut))

    async def _run(self, fut: asyncio.Future[None]) -> None:
        self.runs += 1
        try:
            await self._work()
        except Exception as exc:  # every waiter gets it; the next run starts afresh
            fut.set_exception(exc)
            fut.exception()  # retrieved: a fence nobody waits for any more must not log
        else:
            fut.set_result(None)
        finally:
            self._running = None
            if self._next is not None:
                self._start()

    def cancel(self) -> None:
        if self._running is not None:
            self._running.cancel()


__all__ = ["Fence"]
