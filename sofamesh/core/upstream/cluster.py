"""Cluster: a named set of endpoints with a balancer, pools and stats (the upstream side's model).

``Endpoint`` lives in ``core/endpoint.py`` (below proxy and upstream, which both use it) and is
re-exported here. Outlier detection (``outlier.py``) and circuit breakers (``circuit_breaker.py``)
hang off the cluster as ``outlier`` and ``breaker``, each None when the config does not ask for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.endpoint import Endpoint
from sofamesh.core.net.tls import TlsSource
from sofamesh.core.stats import ClusterStats
from sofamesh.core.upstream.circuit_breaker import CircuitBreaker
from sofamesh.core.upstream.outlier import OutlierDetector

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.codec import CodecFactory
    from sofamesh.core.upstream.load_balancer import LoadBalancer
    from sofamesh.core.upstream.pool import Pool


class Cluster:
    """A named set of endpoints with a balancer, pools and stats."""

    __slots__ = ("_last_pool", "_panic", "breaker", "config", "ejected", "endpoints", "lb", "limits", "loop", "name",
                 "outlier", "pools", "protocol", "stats", "tls")

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
        # Retries are limited (Envoy's default max_retries 3) even without circuit_breakers; the
        # request path checks the other thresholds only when ``breaker`` is set.
        self.limits = CircuitBreaker(config.circuit_breakers)
        self.breaker = self.limits if config.circuit_breakers is not None else None
        od = config.ejection()
        self.outlier = OutlierDetector(self, od, config.outlier_detection is not None) if od is not None else None
        self.ejected = 0  # endpoints ejected now (outlier detection); the common case reads only this
        self._panic = config.healthy_panic_threshold

    def choose(self, exclude: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        """An endpoint for the next try: not ejected, not in ``exclude`` (tried already), None when
        there is none. Under the panic threshold (Envoy's ``healthy_panic_threshold``: fewer than
        that percentage of endpoints healthy) ejections are ignored and every endpoint may serve."""
        eps = self.endpoints
        if not exclude and not self.ejected:  # the common case: nothing ejected, nothing tried yet
            return self.lb.choose(eps) if eps else None
        if not eps:
            return None
        healthy = [e for e in eps if not e.ejected_until]
        if len(healthy) * 100.0 < self._panic * len(eps):
            healthy = eps  # panic mode, as Envoy: too few healthy endpoints to trust the ejections
        if exclude:
            healthy = [e for e in healthy if e not in exclude]
        return self.lb.choose(healthy) if healthy else None

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
        return out


__all__ = ["Cluster", "Endpoint"]
