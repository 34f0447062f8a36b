"""Push debouncing: quiet period, bounded by a max delay."""

from __future__ import annotations

import asyncio

import pytest

from sofamesh.pilot.xds.debounce import Debouncer

from ..conftest import run


def _fired_after(triggers: list[float], quiet: float, max_delay: float) -> list[float]:
    """Trigger at the given offsets (seconds); return when each push fired, relative to the start."""

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        fired: list[float] = []
        deb = Debouncer(lambda first: fired.append(loop.time() - start), quiet, max_delay)
        for at in triggers:
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            deb.trigger()
        await asyncio.sleep(max_delay + quiet + 0.1)
        return fired

    return run(scenario(), 10)


def test_a_burst_fires_once_after_the_quiet_period() -> None:
    fired = _fired_after([0, 0.02, 0.04, 0.06], quiet=0.1, max_delay=1.0)
    assert len(fired) == 1 and 0.15 <= fired[0] < 0.9


def test_a_never_ending_burst_still_fires_by_the_max_delay() -> None:
    fired = _fired_after([i * 0.05 for i in range(14)], quiet=0.2, max_delay=0.5)
    assert len(fired) >= 2 and 0.45 <= fired[0] < 0.9


def test_max_delay_below_quiet_is_refused() -> None:
    with pytest.raises(ValueError, match="quiet"):
        Debouncer(lambda first: None, quiet=1, max_delay=0.5)
