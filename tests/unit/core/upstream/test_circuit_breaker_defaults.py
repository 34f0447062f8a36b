"""A cluster without ``circuit_breakers`` has Envoy's default thresholds on its request path (1024
connections, pending and active requests, 3 retries), as Envoy does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.upstream.cluster import Cluster
from sofamesh.plugins.load_balancers.round_robin import RoundRobinFactory
from sofamesh.plugins.protocols.http1.codec import Http1CodecFactory


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


class Waiting:
    """A request waiting for a connection; remembers whether it was refused."""

    refused = False
    done = False

    def on_overflow(self) -> None:
        self.refused = True


def _cluster(loop: asyncio.AbstractEventLoop, **extra: object) -> Cluster:
    cfg = ClusterConfig(name="c", endpoints=["127.0.0.1:1"], **extra)  # type: ignore[arg-type]
    return Cluster(cfg, RoundRobinFactory().create(), None, loop)


def test_without_circuit_breakers_envoys_default_thresholds_apply(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop)
    cb = c.breaker
    assert cb is not None and (cb.max_connections, cb.max_pending_requests, cb.max_requests, cb.max_retries) == (
        1024, 1024, 1024, 3)
    assert c.snapshot()["circuit_breakers"]["max_requests"] == 1024  # type: ignore[index]


def test_the_1025th_pending_request_overflows_without_circuit_breakers(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop)
    pool = c.pool_for(c.endpoints[0], Http1CodecFactory())
    waiting = [Waiting() for _ in range(1025)]
    accepted = [pool.queue(w) for w in waiting]  # type: ignore[arg-type]
    assert accepted == [True] * 1024 + [False]
    assert [w.refused for w in waiting[-2:]] == [False, True]
    assert c.stats.upstream_rq_pending_overflow == 1
    pool.unqueue(1024)
    c.close()


def test_configured_thresholds_replace_the_defaults(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, circuit_breakers={"max_pending_requests": 2})
    pool = c.pool_for(c.endpoints[0], Http1CodecFactory())
    assert [pool.queue(Waiting()) for _ in range(3)] == [True, True, False]  # type: ignore[arg-type]
    pool.unqueue(2)
    c.close()
