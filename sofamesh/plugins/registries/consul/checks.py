"""Consul's HTTP and TCP checks, run by Pilot as the Consul agent runs them.

An HTTP check sends ``Method`` (``GET``) to ``HTTP`` with ``Header`` and ``Body`` every ``Interval``,
waiting at most ``Timeout`` (10 s): a 2xx answer is ``passing``, 429 ``warning``, anything else or no
answer ``critical``; ``TLSSkipVerify`` accepts any certificate. A TCP check connects to ``TCP``
(``host:port``): connected is ``passing``, refused or timed out ``critical``. The output names the
answer or the error, as Consul's does. ``SuccessBeforePassing``, ``FailuresBeforeWarning`` and
``FailuresBeforeCritical`` hold a status back until that many results in a row, as Consul's status
handler does. **Choice**: Consul waits a random fraction of the interval before a check's first
run; Pilot runs it at once, so a new instance is routable as soon as it answers.

One task waits for the next check due (a heap by due time); each run is a task of its own, and the
next run of a check is scheduled when it ends, so a slow check never overlaps itself. A check whose
instance was deregistered or registered again is dropped when it comes due.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from sofamesh.core.net.loop import cancel
from sofamesh.plugins.registries.consul.mapping import CRITICAL, PASSING, WARNING

log = logging.getLogger("sofamesh.pilot.registry.consul.checks")
RUN = ("http", "tcp")
_OUTPUT_MAX = 4096  # Consul keeps the first 4 KiB of an HTTP check's body
_HEADERS = {"User-Agent": "Consul Health Check", "Accept": "text/plain, text/*, */*"}

Check = dict[str, Any]
Alive = Callable[[Any, Check], bool]
Report = Callable[[Any, Check, str, str], None]


def _status_after(check: Check, status: str) -> str | None:
    """Count ``status`` into the check's run of results; the status to show now, ``None``: unchanged."""
    if status in (PASSING, WARNING):
        check["successes"] = check.get("successes", 0) + 1
        check["failures"] = 0
        return status if check["successes"] >= check.get("success_before_passing", 0) else None
    check["failures"] = check.get("failures", 0) + 1
    check["successes"] = 0
    if check["failures"] >= check.get("failures_before_critical", 0):
        return CRITICAL
    if check["failures"] >= check.get("failures_before_warning", 0):
        return WARNING
    return None


async def probe_http(session: aiohttp.ClientSession, check: Check) -> tuple[str, str]:
    method, url = str(check.get("method") or "GET").upper(), str(check["http"])
    headers = dict(_HEADERS)
    for name, values in (check.get("header") or {}).items():
        headers[str(name)] = ", ".join(str(v) for v in values) if isinstance(values, list) else str(values)
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=str(check.get("body") or "") or None,
            timeout=aiohttp.ClientTimeout(total=check["timeout_s"]),
            ssl=False if check.get("tls_skip_verify") else True,
            allow_redirects=True,
        ) as resp:
            body = (await resp.content.read(_OUTPUT_MAX)).decode("utf-8", "replace")
            out = f"HTTP {method} {url}: {resp.status} {resp.reason or ''} Output: {body}"
            if 200 <= resp.status < 300:
                return PASSING, out
            return (WARNING if resp.status == 429 else CRITICAL), out
    except TimeoutError:
        return CRITICAL, f"Get {url!r}: request timed out after {check['timeout_s']:g}s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return CRITICAL, f"{method} {url!r}: {exc or type(exc).__name__}"


async def probe_tcp(check: Check) -> tuple[str, str]:
    target = str(check["tcp"])
    host, _, port = target.rpartition(":")
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), check["timeout_s"]
        )
    except TimeoutError:
        return CRITICAL, f"dial tcp {target}: i/o timeout after {check['timeout_s']:g}s"
    except (OSError, ValueError) as exc:
        return CRITICAL, f"dial tcp {target}: {exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return PASSING, f"TCP connect {target}: Success"


class CheckRunner:
    """Runs the HTTP and TCP checks of the registered instances. ``alive(entry, check)``: whether the
    check still belongs to a registered instance; ``report(entry, check, status, output)``: a new
    status to show (after the counters of :func:`_status_after`)."""

    def __init__(self, alive: Alive, report: Report, clock: Callable[[], float] = time.monotonic) -> None:
        self._alive = alive
        self._report = report
        self._clock = clock
        self._heap: list[tuple[float, int, Any, Check]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.runs = 0

    def schedule(self, entry: Any) -> None:
        """Run ``entry``'s HTTP and TCP checks now, then every interval."""
        now = self._clock()
        for check in entry.wire.get("checks", []):
            if check.get("Type") in RUN:
                heapq.heappush(self._heap, (now, next(self._seq), entry, check))
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        for task in list(self._running):
            await cancel(task)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                _due, _n, entry, check = heapq.heappop(self._heap)
                if self._alive(entry, check):
                    task = asyncio.get_running_loop().create_task(self._run(entry, check))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
            self._wake.clear()
            delay = self._heap[0][0] - now if self._heap else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, delay))

    async def _run(self, entry: Any, check: Check) -> None:
        started = self._clock()
        try:
            if check["Type"] == "http":
                assert self._session is not None
                status, output = await probe_http(self._session, check)
            else:
                status, output = await probe_tcp(check)
        except Exception as exc:  # a check must never stop the others
            log.exception("consul check %s failed to run", check.get("CheckID"))
            status, output = CRITICAL, f"check failed to run: {exc}"
        self.runs += 1
        if not self._alive(entry, check):
            return
        shown = _status_after(check, status)
        if shown is not None:
            self._report(entry, check, shown, output)
        due = max(started + check["interval_s"], self._clock())
        heapq.heappush(self._heap, (due, next(self._seq), entry, check))
        if self._wake is not None:
            self._wake.set()


__all__ = ["RUN", "CheckRunner", "probe_http", "probe_tcp"]
