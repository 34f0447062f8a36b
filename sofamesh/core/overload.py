"""The overload manager (Envoy's): measures this process's memory (RSS) and active downstream
connections every ``refresh_interval_ms``, and turns actions on and off by their pressure.

Actions, in the order a memory ladder reaches them (docs/configuration.md, "Overload manager"):
``stop_accepting_connections`` (listeners stop accepting; new connections wait in the backlog),
``reject_incoming_connections`` (closed on accept), ``disable_http_keepalive``,
``stop_accepting_requests`` (new requests get the protocol's overload reply: HTTP 503 with
``x-envoy-overloaded``, Bolt SERVER_THREADPOOL_BUSY, Dubbo SERVER_THREADPOOL_EXHAUSTED),
``shrink_heap`` (free memory goes back to the system) and ``reset_high_memory_stream`` (the
connections holding the most undecoded or unsent bytes are reset). What connections and requests
must see is written to ``core/pressure.py``; nothing here runs per request.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

from sofamesh.core.pressure import PROCESS, RESET_MIN_BYTES
from sofamesh.core.proxy.stream_manager import DownstreamConnection

if TYPE_CHECKING:
    from sofamesh.core.config.model import OverloadManagerConfig
    from sofamesh.core.listeners import ListenerSet

log = logging.getLogger("sofamesh.overload")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``); elsewhere its peak."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _heap_trimmer() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``: free pages inside the heap go back to the system. Also fixes the
    mmap threshold at 256 KiB (glibc otherwise raises it up to 32 MiB as big blocks are freed):
    a large buffer (a frame being accumulated) is then mapped on its own, grows by ``mremap``
    and gives its memory back the moment it is freed, so RSS follows what connections hold."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]

    def shrink() -> None:
        trim(0)

    return shrink


class OverloadManager:
    """One per process; ``start`` runs it until ``stop``."""

    def __init__(self, config: OverloadManagerConfig, listeners: ListenerSet) -> None:
        self.listeners = listeners
        self.active: dict[str, bool] = {}
        self.paused: list[str] = []  # listeners this manager stopped accepting on
        self.peak = 0
        self.trim = _heap_trimmer()
        self._task: asyncio.Task[None] | None = None
        self._configure(config)

    def _configure(self, config: OverloadManagerConfig) -> None:
        self.config = config
        self.actions = config.effective_actions()
        # an action kept by a reload keeps its state until the next measurement; one dropped is off
        names = {a.name for a in self.actions}
        for name, on in self.active.items():
            if name not in names:
                if on:
                    log.warning("overload: %s off (no longer configured)", name)
                PROCESS.values.pop(f"{name}.active", None)
        self.active = {a.name: self.active.get(a.name, False) for a in self.actions}
        # the lowest memory threshold resetting streams, in bytes (0: no such action)
        self.reset_at = min(
            (
                t.threshold * config.max_rss_bytes
                for a in self.actions
                if a.name == "reset_high_memory_stream"
                for t in a.triggers
                if t.name == "memory"
            ),
            default=0.0,
        )
        PROCESS.max_cx = config.max_active_downstream_connections

    def reconfigure(self, config: OverloadManagerConfig) -> None:
        """A reload's settings (Envoy reads its overload manager from the bootstrap only; sofamesh's
        config reload carries it too): new monitors, thresholds and actions are measured at once,
        an action no longer configured turns off, and ``refresh_interval_ms`` applies from the next
        refresh. The same settings again change nothing."""
        if config == self.config:
            return
        self._configure(config)
        for name in [n for n in PROCESS.values if n.endswith(".pressure")]:
            del PROCESS.values[name]  # a monitor the new settings dropped shows no stale pressure
        self.tick()
        log.info("overload manager: new settings (%s)", ", ".join(a.name for a in self.actions) or "no actions")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tick()
        self._task = loop.create_task(self._run())

    def close(self) -> None:
        """A reload removed the overload manager: every action off (listeners it paused accept
        again), no process-wide connection limit, then ``stop``."""
        self._accepting(True)
        values = PROCESS.values
        for name in [n for n in values if n.endswith((".active", ".pressure"))]:
            del values[name]
        self.stop()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        p = PROCESS
        p.reject = p.shed = p.no_keepalive = p.per_request = False
        p.max_cx = p.held_limit = 0

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval_ms / 1000.0)
            try:
                self.tick()
            except Exception:
                log.exception("overload manager: a refresh failed; the next one tries again")

    def pressures(self, rss: int) -> dict[str, float]:
        cfg = self.config
        out = {}
        if cfg.max_rss_bytes:
            out["memory"] = rss / cfg.max_rss_bytes
        if cfg.max_active_downstream_connections:
            out["downstream_connections"] = PROCESS.active_cx / cfg.max_active_downstream_connections
        return out

    def tick(self) -> None:
        """Measure, then turn actions on and off; run the ones that act while on."""
        p = PROCESS
        rss = rss_bytes()
        self.peak = max(self.peak, rss)
        pressures = self.pressures(rss)
        p.values["rss_bytes"] = rss
        p.values["rss_peak_bytes"] = self.peak
        for name, v in pressures.items():
            p.values[f"{name}.pressure"] = round(v, 4)
        now: dict[str, bool] = dict.fromkeys(self.active, False)
        for a in self.actions:
            if any(pressures.get(t.name, 0.0) >= t.threshold for t in a.triggers):
                now[a.name] = True
        for name, on in now.items():
            if on != self.active[name]:
                log.warning(
                    "overload: %s %s (pressure %s)",
                    name,
                    "on" if on else "off",
                    ", ".join(f"{k} {v:.2f}" for k, v in pressures.items()),
                )
                if on:
                    p.count(f"{name}.activations")
            p.values[f"{name}.active"] = 1 if on else 0
        self.active = now
        p.reject = now.get("reject_incoming_connections", False)
        p.shed = now.get("stop_accepting_requests", False)
        p.no_keepalive = now.get("disable_http_keepalive", False)
        p.per_request = p.shed or p.no_keepalive
        self._budget(rss)
        self._accepting(not now.get("stop_accepting_connections", False))
        if now.get("reset_high_memory_stream"):
            self._reset_largest()

        if now.get("shrink_heap") and self.trim is not None:
            self.trim()

    def _budget(self, rss: int) -> None:
        """What messages spanning reads may hold until the next measurement: the memory the
        ``reset_high_memory_stream`` threshold leaves above what the process holds otherwise."""
        p = PROCESS
        if not self.reset_at:
            p.held_limit = 0
            return
        other = max(0, rss - p.held)
        p.held_limit = max(RESET_MIN_BYTES, int(self.reset_at) - other)

    def _accepting(self, accept: bool) -> None:
        if not accept and not self.paused:
            self.paused = self.listeners.pause_accepting()
        elif accept and self.paused:
            names, self.paused = self.paused, []
            self.listeners.resume_accepting(names)

    def _reset_largest(self) -> None:
        """Reset the larger half of the connections holding at least ``RESET_MIN_BYTES``."""
        held: list[tuple[int, DownstreamConnection]] = []
        for rt in self.listeners.runtimes():
            for conn in rt.connections:
                if not isinstance(conn, DownstreamConnection) or conn.closed or conn.transport is None:
                    continue
                n = conn.transport.get_write_buffer_size()
                if conn.codec is not None:
                    n += conn.codec.buffered()
                if n >= RESET_MIN_BYTES:
                    held.append((n, conn))
        if not held:
            return
        held.sort(key=lambda x: x[0], reverse=True)
        chosen = held[: max(1, len(held) // 2)]
        for n, conn in chosen:
            conn.reset_for_overload(n)
        if self.trim is not None:
            self.trim()


__all__ = ["OverloadManager", "rss_bytes"]
