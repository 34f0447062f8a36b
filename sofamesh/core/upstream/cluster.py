"""Cluster: a named set of endpoints with a balancer, pools and stats (the upstream side's model).

``Endpoint`` lives in ``core/endpoint.py`` (below proxy and upstream, which both use it) and is
re-exported here. Outlier detection (``outlier.py``) and circuit breakers (``circuit_breaker.py``)
hang off the cluster as ``outlier`` and ``breaker``, each None when the config does not ask for it;
active health checks (``health_check.py``) as ``checkers``. Priorities, localities and health
become a ``Plan`` (``host_set.py``) when any of them matters; a cluster of healthy endpoints at one
priority has none, and its requests go straight to the balancer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.endpoint import Endpoint
from sofamesh.core.net.tls import TlsSource
from sofamesh.core.stats import ClusterStats
from sofamesh.core.upstream.circuit_breaker import CircuitBreaker
from sofamesh.core.upstream.host_set import Plan, build_plan
from sofamesh.core.upstream.outlier import OutlierDetector

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.codec import CodecFactory
    from sofamesh.core.upstream.health_check import HealthChecker
    from sofamesh.core.upstream.load_balancer import LoadBalancer
    from sofamesh.core.upstream.pool import Pool


class Cluster:
    """A named set of endpoints with a balancer, pools and stats."""

    __slots__ = ("_last_pool", "_panic", "_plan", "breaker", "checkers", "config", "ejected", "endpoints", "hashing",
                 "lb", "limits", "loop", "name", "outlier", "pools", "protocol", "stats", "tls",
                 "tls_matches")

    def __init__(self, config: ClusterConfig, lb: LoadBalancer, protocol: CodecFactory | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.name = config.name
        self.lb = lb
        self.protocol = protocol
        self.loop = loop
        self.endpoints = [Endpoint(e) for e in config.endpoints]
        self.stats = ClusterStats()
        self.pools: dict[tuple[str, str], Pool] = {}
        self._last_pool: Pool | None = None  # what the previous request used: usually this one's too
        self.tls = TlsSource(config.tls, server=False, path=f"clusters[{config.name}].tls") if config.tls else None
        # Envoy's transport_socket_matches: (labels an endpoint must hold, its TLS or None for plaintext)
        self.tls_matches = tuple(
            (tuple(m.match.items()),
             TlsSource(m.tls, server=False, path=f"clusters[{config.name}].tls_matches[{i}].tls") if m.tls else None)
            for i, m in enumerate(config.tls_matches))
        # Retries are limited (Envoy's default max_retries 3) even without circuit_breakers; the
        # request path checks the other thresholds only when ``breaker`` is set.
        self.limits = CircuitBreaker(config.circuit_breakers)
        self.breaker = self.limits if config.circuit_breakers is not None else None
        od = config.ejection()
        self.outlier = OutlierDetector(self, od, config.outlier_detection is not None) if od is not None else None
        self.ejected = 0  # endpoints ejected now (outlier detection)
        self._panic = config.healthy_panic_threshold
        self.hashing = lb.needs_hash  # the stream computes a request's hash only for these balancers
        self.checkers: list[HealthChecker] = []  # set by the builder; started with ``start``
        self._plan: Plan | None = None  # None: every endpoint healthy at one priority (the common case)
        self.health_changed()

    def add_checker(self, checker: HealthChecker) -> None:
        """An active health check for this cluster: its endpoints start failed until checked."""
        self.checkers.append(checker)
        for ep in self.endpoints:
            checker.mark_new(ep)
        self.health_changed()

    def start(self) -> None:
        """The cluster serves: start its active health checks (idempotent). A cluster built and
        then dropped for an equal one already serving is never started."""
        for hc in self.checkers:
            hc.start()

    def health_changed(self) -> None:
        """Endpoints, their weights, priorities or health changed: recompute what may be chosen."""
        c = self.config
        self._plan = build_plan(self.endpoints, self._panic, c.overprovisioning_factor, c.locality_weighted_lb)
        self.lb.endpoints_changed(self.endpoints)

    def endpoints_updated(self, added: list[Endpoint]) -> None:
        """An update replaced the endpoint list in place (``core/update.py``); ``added`` are new:
        they are health checked from pending and start slow (``slow_start_config``)."""
        now = self.loop.time()
        for ep in added:
            ep.slow_start_since = now
            for hc in self.checkers:
                hc.mark_new(ep)
        for hc in self.checkers:
            hc.sync()
        self.health_changed()

    def choose(self, exclude: tuple[Endpoint, ...] = (), hash: int | None = None) -> Endpoint | None:
        """An endpoint for the next try, or None when there is none: from the priority and locality
        Envoy's rules give (``host_set.py``), healthy unless in panic, not in ``exclude`` (tried
        already). ``hash`` (only for a balancer with ``needs_hash``) also picks the priority."""
        plan = self._plan
        if plan is None and not exclude:  # the common case: every endpoint healthy, nothing tried yet
            eps = self.endpoints
            if not eps:
                return None
            return self.lb.choose(eps) if hash is None else self.lb.choose(eps, hash)
        if plan is None:
            cands: list[Endpoint] = self.endpoints
        else:
            cands = plan.level(hash).pick(hash)
        if exclude:
            cands = [e for e in cands if e not in exclude]
        if not cands:
            return None
        return self.lb.choose(cands) if hash is None else self.lb.choose(cands, hash)

    def report_failure(self, ep: Endpoint, http_status: int = 503) -> None:
        """A failure this proxy saw itself on ``ep``: connect failure or reset (503), timeout (504)."""
        od = self.outlier
        if od is None:
            ep.rq_errors += 1
        else:
            od.local_failure(ep, http_status)

    def report_status(self, ep: Endpoint, http_status: int) -> None:
        """``ep`` answered ``http_status`` >= 500."""
        od = self.outlier
        if od is None:
            ep.rq_errors += 1
        else:
            od.upstream_status(ep, http_status)

    def report_success(self, ep: Endpoint) -> None:
        """``ep`` answered after failures (``ep.consecutive_failures`` is nonzero)."""
        od = self.outlier
        if od is not None:
            od.success(ep)
        else:
            ep.consecutive_failures = 0

    def tls_for(self, ep: Endpoint) -> TlsSource | None:
        """The TLS a new connection to ``ep`` uses (per connection, not per request)."""
        for match, tls in self.tls_matches:
            labels = ep.labels
            if all(labels.get(k) == v for k, v in match):
                return tls
        return self.tls

    def pool_for(self, ep: Endpoint, factory: CodecFactory) -> Pool:
        last = self._last_pool
        if last is not None and last.endpoint is ep and last.factory is factory and not last.closed:
            return last
        key = (ep.address, factory.name)
        pool = self.pools.get(key)
        if pool is None:
            from sofamesh.core.upstream.pool import ExclusivePool, MultiplexedPool, StreamingPool

            cls = StreamingPool if factory.streaming else MultiplexedPool if factory.multiplexed else ExclusivePool
            pool = self.pools[key] = cls(self, ep, factory)
            if self.outlier is not None:
                self.outlier.start()  # here, not in __init__: a cluster built but never used arms no timer
        self._last_pool = pool
        return pool

    def close(self) -> None:
        for hc in self.checkers:
            hc.stop()
        if self.outlier is not None:
            self.outlier.stop()
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        self._last_pool = None

    def snapshot(self) -> dict[str, object]:
        now = self.loop.time()
        out: dict[str, object] = {
            "name": self.name, "lb": self.config.lb, "protocol": self.protocol.name if self.protocol else None,
            "endpoints": [e.snapshot(now) for e in self.endpoints], "stats": self.stats.snapshot()}
        if self.breaker is not None:
            out["circuit_breakers"] = self.breaker.snapshot()
        if self._plan is not None:
            out["priority_load"] = self._plan.describe()
        if self.checkers:
            out["health_checks"] = [hc.snapshot() for hc in self.checkers]
        return out


__all__ = ["Cluster", "Endpoint"]
