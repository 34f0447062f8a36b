"""Cluster: a named set of endpoints with a balancer, pools and stats (the upstream side's model).

``Endpoint`` lives in ``core/endpoint.py`` (below proxy and upstream, which both use it) and is
re-exported here. Outlier detection (``outlier.py``) and circuit breakers (``circuit_breaker.py``)
hang off the cluster as ``outlier`` and ``breaker`` (Envoy's default thresholds without
``circuit_breakers``);
active health checks (``health_check.py``) as ``checkers``. Priorities, localities and health
become a ``Plan`` (``host_set.py``) when any of them matters; a cluster of healthy endpoints at one
priority has none, and its requests go straight to the balancer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.config.model import ClusterConfig, ZoneAwareLbConfig
from sofamesh.core.endpoint import Endpoint
from sofamesh.core.net.tls import TlsSource
from sofamesh.core.stats import ClusterStats
from sofamesh.core.upstream.circuit_breaker import CircuitBreaker
from sofamesh.core.upstream.host_set import Plan, build_plan
from sofamesh.core.upstream.outlier import OutlierDetector
from sofamesh.core.upstream.zone_aware import Locality, ZoneInput

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.codec import CodecFactory
    from sofamesh.core.upstream.health_check import HealthChecker
    from sofamesh.core.upstream.load_balancer import LoadBalancer
    from sofamesh.core.upstream.pool import Pool


_ZONE_DEFAULTS = ZoneAwareLbConfig()


class Cluster:
    """A named set of endpoints with a balancer, pools and stats."""

    __slots__ = ("_last_pool", "_panic", "_plan", "breaker", "checkers", "config", "dependents", "ejected",
                 "endpoints", "hashing", "http", "lb", "limits", "local", "local_zone", "loop", "name", "outlier",
                 "pools", "protocol", "stats", "tls", "tls_matches")

    def __init__(self, config: ClusterConfig, lb: LoadBalancer, protocol: CodecFactory | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.name = config.name
        self.lb = lb
        self.protocol = protocol
        # HTTP requests' upstream codec by their own protocol's name, when ``protocol`` is None and
        # ``http_protocol`` is set (set by the builder); other requests keep their own codec
        self.http: dict[str, CodecFactory] | None = None
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
        # Without circuit_breakers Envoy's default thresholds apply (1024 connections, pending and
        # active requests, 3 retries), as in Envoy: ``breaker`` and ``limits`` are one object.
        self.limits = CircuitBreaker(config.circuit_breakers)
        self.breaker: CircuitBreaker | None = self.limits
        od = config.ejection()
        self.outlier = OutlierDetector(self, od, config.outlier_detection is not None) if od is not None else None
        self.ejected = 0  # endpoints ejected now (outlier detection)
        self._panic = config.healthy_panic_threshold
        self.hashing = lb.needs_hash  # the stream computes a request's hash only for these balancers
        self.checkers: list[HealthChecker] = []  # set by the builder; started with ``start``
        self._plan: Plan | None = None  # None: every endpoint healthy at one priority (the common case)
        # zone-aware routing (``zone_aware_lb``): the caller's own cluster and locality (``set_local``)
        self.local: Cluster | None = None
        self.local_zone: Locality = ("", "", "")
        self.dependents: list[Cluster] = []  # clusters whose zone routing follows this one's health
        self.health_changed()

    def set_local(self, local: Cluster | None, zone: Locality) -> None:
        """Zone-aware routing compares this cluster with ``local`` (``cluster_manager.local_cluster_name``;
        None when there is none) for a caller in ``zone``; a change of ``local``'s health re-plans it."""
        self.local = local
        self.local_zone = zone
        if local is not None and local is not self:
            local.dependents.append(self)
        self.health_changed()

    def _zone_input(self) -> ZoneInput | None:
        za = self.config.zone_aware_lb
        if za is None:
            if self.local is None:
                return None
            za = _ZONE_DEFAULTS  # as Envoy: a local cluster turns zone routing on with the defaults
        counts: dict[Locality, int] = {}
        total = 0
        local = self.local
        for e in local.endpoints if local is not None else ():
            if e.priority == 0:
                total += 1
                if e.healthy:
                    counts[e.locality] = counts.get(e.locality, 0) + 1
        healthy = sum(counts.values())
        panic = not total or 100.0 * healthy / total < self._panic  # Envoy: the local cluster in panic
        return ZoneInput(self.local_zone, counts, panic, za.min_cluster_size, za.routing_enabled,
                         za.fail_traffic_on_panic)

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
        self._plan = build_plan(self.endpoints, self._panic, c.overprovisioning_factor, c.locality_weighted_lb,
                                self._zone_input())
        self.lb.endpoints_changed(self.endpoints)
        for d in self.dependents:
            d.health_changed()

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
            lb = self.lb
            if hash is None:
                if len(eps) == 1 and lb.picks_sole_endpoint:
                    return eps[0]
                return lb.choose(eps)
            return lb.choose(eps, hash)
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


def link_local(clusters: dict[str, Cluster], local_name: str, zone: Locality) -> None:
    """Point each cluster at the local cluster ``local_name`` (if one of ``clusters``; as in Envoy,
    every cluster then routes zone-aware, with ``zone_aware_lb`` or its defaults) and the caller's
    ``zone``; after an update, links kept clusters afresh."""
    local = clusters.get(local_name) if local_name else None
    for cluster in clusters.values():
        cluster.dependents.clear()
    for cluster in clusters.values():
        if local is not None or cluster.config.zone_aware_lb is not None:
            cluster.set_local(local, zone)


__all__ = ["Cluster", "Endpoint", "link_local"]
