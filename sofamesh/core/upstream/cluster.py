"""Cluster: a named set of endpoints with a balancer, pools and stats (the upstream side's model).

``Endpoint`` lives in ``core/endpoint.py`` (below proxy and upstream, which both use it) and is
re-exported here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.endpoint import Endpoint
from sofamesh.core.net.tls import TlsSource
from sofamesh.core.stats import ClusterStats

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.codec import CodecFactory
    from sofamesh.core.upstream.load_balancer import LoadBalancer
    from sofamesh.core.upstream.pool import Pool


class Cluster:
    """A named set of endpoints with a balancer, pools and stats."""

    __slots__ = ("_last_pool", "config", "endpoints", "lb", "loop", "name", "pools", "protocol", "stats", "tls")

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

    def choose(self, exclude: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        now = self.loop.time()
        eps = self.endpoints
        if not exclude:  # the common case: nothing ejected, nothing tried yet; no list to build
            for e in eps:
                if e.ejected_until > now:
                    break
            else:
                return self.lb.choose(eps) if eps else None
        healthy = [e for e in eps if e.ejected_until <= now and e not in exclude]
        if not healthy:
            if exclude or not eps:
                return None
            healthy = eps  # panic mode, as Envoy: every endpoint is ejected, so try them all anyway
        return self.lb.choose(healthy)

    def report_failure(self, ep: Endpoint) -> None:
        ep.consecutive_failures += 1
        ep.rq_errors += 1
        h = self.config.health
        if ep.consecutive_failures >= h.consecutive_failures and h.ejection_ms:
            factor = min(2 ** min(ep.ejections, 4), 10)
            ep.ejected_until = self.loop.time() + h.ejection_ms * factor / 1000.0
            ep.ejections += 1

    @staticmethod
    def report_success(ep: Endpoint) -> None:
        if ep.consecutive_failures:
            ep.consecutive_failures = 0
            ep.ejections = 0
            ep.ejected_until = 0.0

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
        self._last_pool = pool
        return pool

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        self._last_pool = None

    def snapshot(self) -> dict[str, object]:
        now = self.loop.time()
        return {"name": self.name, "lb": self.config.lb,
                "protocol": self.protocol.name if self.protocol else None,
                "endpoints": [e.snapshot(now) for e in self.endpoints], "stats": self.stats.snapshot()}


__all__ = ["Cluster", "Endpoint"]
