"""The fence a new ADS stream waits for: one run serves every caller that arrived before it started."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sofamesh.pilot.fence import Fence

from .conftest import run, running_pilot


def test_callers_arriving_during_a_run_share_the_next_one() -> None:
    async def main() -> None:
        started: list[int] = []
        release = asyncio.Event()

        async def work() -> None:
            started.append(len(started))
            await release.wait()

        fence = Fence(work)
        first = [asyncio.create_task(fence.wait()) for _ in range(5)]
        await asyncio.sleep(0.01)
        assert started == [0]  # the first caller's run; the four others arrived after it began
        late = [asyncio.create_task(fence.wait()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert started == [0] and not any(t.done() for t in first + late)
        release.set()
        await asyncio.wait_for(asyncio.gather(*first), 1)
        await asyncio.wait_for(asyncio.gather(*late), 1)
        assert started == [0, 1] and fence.runs == 2  # seven callers, one more run

    run(main())


def test_a_failed_run_reaches_its_callers_and_the_next_caller_runs_again() -> None:
    async def main() -> None:
        calls = 0

        async def work() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("store unreachable")

        fence = Fence(work)
        with pytest.raises(RuntimeError, match="store unreachable"):
            await fence.wait()
        await fence.wait()
        assert calls == 2

    run(main())


def test_a_caller_that_gives_up_does_not_cancel_the_run_others_wait_for() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def work() -> None:
            await release.wait()

        fence = Fence(work)
        impatient = asyncio.create_task(fence.wait())
        patient = asyncio.create_task(fence.wait())
        await asyncio.sleep(0.01)
        impatient.cancel()
        release.set()
        await asyncio.wait_for(patient, 1)
        assert impatient.cancelled() and patient.done() and patient.exception() is None

    run(main())


def test_a_pilot_whose_stores_only_it_writes_answers_new_streams_without_a_fence(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_pilot(tmp_path) as pilot:  # the embedded registry and the embedded config store
            assert pilot.ads.fence is None
            assert pilot.fence.runs == 0

    run(main())
