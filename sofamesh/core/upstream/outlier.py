"""Outlier detection, as Envoy's: passive ejection of endpoints that fail.

Detectors: consecutive 5xx, consecutive gateway failures (502 / 503 / 504), consecutive locally
originated failures (connect failure, reset, timeout; counted apart from the upstream's own errors
with ``split_external_local_origin_errors``, otherwise as 503 / 504), and every ``interval``
success rate (mean - stdev x factor) and failure percentage over the endpoints with enough requests.
An ejected endpoint stays out for ``base_ejection_time`` x its multiplier (+1 per ejection, -1 per
interval without one, capped by ``max_ejection_time``); at most ``max_ejection_percent`` of a
cluster is ejected at once, and always at least one endpoint may be.

The stream calls in only when something failed, or on the first success after a failure
(``Endpoint.consecutive_failures``); a cluster without detection has no detector at all. Timers:
one interval timer per cluster, started with the cluster's first pool, and one per ejected endpoint.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.config.model import OutlierDetectionConfig
    from sofamesh.core.endpoint import Endpoint
    from sofamesh.core.stats import ClusterStats

CONSECUTIVE_5XX: Final = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE: Final = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE: Final = "consecutive_local_origin_failure"
SUCCESS_RATE: Final = "success_rate"
FAILURE_PERCENTAGE: Final = "failure_percentage"

CONNECT_FAILED: Final = 503  # what a locally originated failure counts as when errors are not split
RESET: Final = 503
TIMEOUT: Final = 504


class EjectionOwner(Protocol):
    """What a detector reads and updates of its cluster (``core/upstream/cluster.py``'s ``Cluster``)."""

    endpoints: list[Endpoint]
    ejected: int
    stats: ClusterStats
    loop: asyncio.AbstractEventLoop


class OutlierDetector:
    __slots__ = ("_config", "_interval", "_last", "_owner", "_tick", "_timers", "split", "timeouts")

    def __init__(self, owner: EjectionOwner, config: OutlierDetectionConfig, timeouts: bool = True) -> None:
        """``timeouts``: whether a timed out request counts against its endpoint (not for the
        older ``health`` form, which counted failed connects and resets only)."""
        self._owner = owner
        self._config = config
        self.timeouts = timeouts
        self._interval = config.interval_ms / 1000.0
        self.split = config.split_external_local_origin_errors
        self._tick: asyncio.TimerHandle | None = None
        self._timers: dict[Endpoint, asyncio.TimerHandle] = {}  # ejected endpoint -> its return
        self._last: dict[Endpoint, tuple[int, int]] = {}  # (rq_total, rq_errors) at the last interval

    @property
    def config(self) -> OutlierDetectionConfig:
        return self._config

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Arm the interval timer (idempotent): called when the cluster opens its first pool."""
        if self._tick is None:
            self._tick = self._owner.loop.call_later(self._interval, self._on_interval)

    def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()

    # -- results (failure paths only) -------------------------------------------------------------
    def upstream_status(self, ep: Endpoint, http_status: int) -> None:
        """The upstream answered with ``http_status`` >= 500 (its own error, not ours)."""
        ep.rq_errors += 1
        if self.split and ep.consecutive_local_origin_failure:
            ep.consecutive_local_origin_failure = 0  # it answered: the connection works
        self._count(ep, http_status)

    def local_failure(self, ep: Endpoint, http_status: int) -> None:
        """A failure this proxy saw itself: ``CONNECT_FAILED``, ``RESET`` or ``TIMEOUT``."""
        if http_status == TIMEOUT and not self.timeouts:
            return
        ep.rq_errors += 1
        if not self.split:
            self._count(ep, http_status)
            return
        c = self._config
        n = ep.consecutive_local_origin_failure = ep.consecutive_local_origin_failure + 1
        ep.consecutive_failures = max(n, ep.consecutive_failures)
        if n == c.consecutive_local_origin_failure:
            ep.consecutive_local_origin_failure = 0
            self._detected(ep, CONSECUTIVE_LOCAL_ORIGIN_FAILURE, c.enforcing_consecutive_local_origin_failure)
            self._settle(ep)

    def success(self, ep: Endpoint) -> None:
        """A response under 500 after failures: every consecutive counter starts again."""
        ep.consecutive_5xx = ep.consecutive_gateway_failure = ep.consecutive_local_origin_failure = 0
        ep.consecutive_failures = 0

    def _count(self, ep: Endpoint, http_status: int) -> None:
        c = self._config
        if http_status in (502, 503, 504):
            g = ep.consecutive_gateway_failure = ep.consecutive_gateway_failure + 1
            if g == c.consecutive_gateway_failure:
                ep.consecutive_gateway_failure = 0
                self._detected(ep, CONSECUTIVE_GATEWAY_FAILURE, c.enforcing_consecutive_gateway_failure)
        else:
            ep.consecutive_gateway_failure = 0
        n = ep.consecutive_5xx = ep.consecutive_5xx + 1
        if n == c.consecutive_5xx:
            ep.consecutive_5xx = 0
            self._detected(ep, CONSECUTIVE_5XX, c.enforcing_consecutive_5xx)
        self._settle(ep)

    @staticmethod
    def _settle(ep: Endpoint) -> None:
        ep.consecutive_failures = max(ep.consecutive_5xx, ep.consecutive_gateway_failure,
                                      ep.consecutive_local_origin_failure)

    # -- ejection ---------------------------------------------------------------------------------
    def _detected(self, ep: Endpoint, kind: str, enforcing: int) -> None:
        owner = self._owner
        if ep.ejected_until:
            return
        owner.stats.outlier_detection_ejections_detected_total += 1
        total = len(owner.endpoints)
        if total and owner.ejected and 100.0 * (owner.ejected + 1) / total > self._config.max_ejection_percent:
            owner.stats.outlier_detection_ejections_overflow += 1
            return
        if enforcing < 100 and (enforcing <= 0 or random.randrange(100) >= enforcing):
            return
        self._eject(ep, kind)

    def _eject(self, ep: Endpoint, kind: str) -> None:
        c = self._config
        owner = self._owner
        now = owner.loop.time()
        ep.ejections += 1
        cap = max(1, -(-c.max_ejection_time_ms // c.base_ejection_time_ms))  # enough to reach the max
        if ep.eject_backoff < cap:
            ep.eject_backoff += 1
        ms = min(c.base_ejection_time_ms * ep.eject_backoff, c.max_ejection_time_ms)
        if c.max_ejection_time_jitter_ms:
            ms += random.randrange(c.max_ejection_time_jitter_ms + 1)
        ep.ejected_until = now + ms / 1000.0
        owner.ejected += 1
        st = owner.stats
        st.outlier_detection_ejections_active += 1
        st.outlier_detection_ejections_enforced_total += 1
        name = f"outlier_detection_ejections_enforced_{kind}"
        setattr(st, name, getattr(st, name) + 1)
        self._timers[ep] = owner.loop.call_at(ep.ejected_until, self._uneject, ep)

    def _uneject(self, ep: Endpoint) -> None:
        self._timers.pop(ep, None)
        if not ep.ejected_until:
            return
        owner = self._owner
        ep.ejected_until = 0.0
        ep.unejected_at = owner.loop.time()
        owner.ejected -= 1
        owner.stats.outlier_detection_ejections_active -= 1
        self.success(ep)  # a returning endpoint starts from zero, as Envoy resets its counters

    # -- every interval ---------------------------------------------------------------------------
    def _on_interval(self) -> None:
        owner = self._owner
        self._tick = owner.loop.call_later(self._interval, self._on_interval)
        now = owner.loop.time()
        c = self._config
        volumes: list[tuple[Endpoint, int, int]] = []
        last = self._last
        eps = owner.endpoints
        for ep in eps:
            t0, e0 = last.get(ep, (0, 0))
            last[ep] = (ep.rq_total, ep.rq_errors)
            if ep.ejected_until:
                continue
            if ep.eject_backoff and now - ep.unejected_at >= self._interval:
                ep.eject_backoff -= 1
            volumes.append((ep, ep.rq_total - t0, ep.rq_errors - e0))
        if len(last) > 2 * len(eps):  # endpoints EDS removed
            keep = set(eps)
            for gone in [e for e in last if e not in keep]:
                del last[gone]
        self._success_rate(volumes, c)
        self._failure_percentage(volumes, c)

    def _success_rate(self, volumes: list[tuple[Endpoint, int, int]], c: OutlierDetectionConfig) -> None:
        rated = [(ep, 100.0 * (n - err) / n) for ep, n, err in volumes
                 if n >= max(1, c.success_rate_request_volume)]
        if not rated or len(rated) < c.success_rate_minimum_hosts:
            return
        mean = sum(r for _, r in rated) / len(rated)
        stdev = (sum((r - mean) ** 2 for _, r in rated) / len(rated)) ** 0.5
        floor = mean - stdev * (c.success_rate_stdev_factor / 1000.0)
        for ep, rate in rated:
            if rate < floor:
                self._detected(ep, SUCCESS_RATE, c.enforcing_success_rate)

    def _failure_percentage(self, volumes: list[tuple[Endpoint, int, int]], c: OutlierDetectionConfig) -> None:
        rated = [(ep, 100.0 * err / n) for ep, n, err in volumes
                 if n >= max(1, c.failure_percentage_request_volume)]
        if not rated or len(rated) < c.failure_percentage_minimum_hosts:
            return
        for ep, pct in rated:
            if pct >= c.failure_percentage_threshold:
                self._detected(ep, FAILURE_PERCENTAGE, c.enforcing_failure_percentage)


__all__ = ["CONNECT_FAILED", "RESET", "TIMEOUT", "EjectionOwner", "OutlierDetector"]
