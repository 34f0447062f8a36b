"""In-process Pilot for unit tests: real sockets on 127.0.0.1 port 0, one event loop per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sofamesh.pilot.app import Pilot
from sofamesh.pilot.config import parse

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 30) -> T:
    """Run one test coroutine with a deadline."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@asynccontextmanager
async def running_pilot(data_dir: Path, **overrides: Any) -> AsyncIterator[Pilot]:
    cfg = {"xds": {"address": "127.0.0.1:0"}, "api": {"address": "127.0.0.1:0"}, "data_dir": str(data_dir),
           "debounce": {"quiet_ms": 20, "max_delay_ms": 200}, "grace_s": 0.5, **overrides}
    pilot = Pilot(parse(cfg))
    await pilot.start()
    try:
        yield pilot
    finally:
        await pilot.stop()
