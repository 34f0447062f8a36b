"""Push debouncing: many mesh changes in a burst become one push.

A push fires once no change arrived for ``quiet`` seconds, or ``max_delay`` seconds after the
first change of the burst, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Debouncer:
    """Calls ``fire(first_change_time)`` on the loop after a quiet period, bounded by a max delay."""

    def __init__(self, fire: Callable[[float], None], quiet: float = 0.1, max_delay: float = 1.0) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError(f"debounce: need 0 <= quiet ({quiet}) <= max_delay ({max_delay})")
        self._fire = fire
        self.quiet = quiet
        self.max_delay = max_delay
        self._first: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.fired = 0
        self.triggers = 0

    def trigger(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.triggers += 1
        if self._first is None:
            self._first = now
        if self._handle is not None:
            self._handle.cancel()
        when = min(now + self.quiet, self._first + self.max_delay)
        self._handle = loop.call_at(when, self._run)

    def _run(self) -> None:
        first, self._first, self._handle = self._first, None, None
        if first is not None:
            self.fired += 1
            self._fire(first)

    def flush(self) -> None:
        """Fire now if a change is waiting (a fence must not leave it to the timer)."""
        if self._handle is not None:
            self._handle.cancel()
            self._run()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._first = None


__all__ = ["Debouncer"]
