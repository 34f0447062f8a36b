"""Priorities, localities and panic as Envoy computes them (``core/upstream/host_set.py``), and what
a cluster then lets its balancer choose from."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.endpoint import FAILED_ACTIVE_HC
from sofamesh.core.upstream.cluster import Cluster
from sofamesh.core.upstream.host_set import priority_loads, tiered_loads
from sofamesh.plugins.load_balancers.round_robin import RoundRobinFactory


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.mark.parametrize(("healths", "loads"), [
    ([100, 100], [100, 0]),
    ([70, 100], [70, 30]),  # 50 % of P0 healthy x 1.4
    ([0, 100], [0, 100]),
    ([0, 0], [100, 0]),
    ([20, 20, 20], [34, 33, 33]),  # normalized: each 20 x 100 / 60, the remainder to P0
    ([56, 28], [67, 33]),  # Envoy's doc: 40 % and 20 % healthy x 1.4, normalized
])
def test_priority_load_follows_envoys_formula(healths: list[int], loads: list[int]) -> None:
    assert priority_loads(healths) == loads


def _cluster(loop: asyncio.AbstractEventLoop, endpoints: list[dict[str, Any]], **extra: Any) -> Cluster:
    cfg = ClusterConfig(name="c", endpoints=endpoints, health=None, **extra)  # type: ignore[arg-type]
    return Cluster(cfg, RoundRobinFactory().create(), None, loop)


def _fail(c: Cluster, *idx: int) -> None:
    for i in idx:
        c.endpoints[i].down |= FAILED_ACTIVE_HC
    c.health_changed()


def test_all_of_priority_0_down_sends_everything_to_priority_1(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, [{"address": "127.0.0.1:1"}, {"address": "127.0.0.1:2"},
                        {"address": "127.0.0.1:3", "priority": 1}, {"address": "127.0.0.1:4", "priority": 1}])
    assert {c.choose().address for _ in range(20)} == {"127.0.0.1:1", "127.0.0.1:2"}  # type: ignore[union-attr]
    _fail(c, 0, 1)
    assert {c.choose().address for _ in range(20)} == {"127.0.0.1:3", "127.0.0.1:4"}  # type: ignore[union-attr]
    assert c.snapshot()["priority_load"] == [{"priority": 1, "load": 100, "panic": False, "candidates": 2}]


def test_half_of_priority_0_down_keeps_70_percent_there(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, [{"address": "127.0.0.1:1"}, {"address": "127.0.0.1:2"},
                        {"address": "127.0.0.1:3", "priority": 1}])
    _fail(c, 0)
    counts = Counter(c.choose().priority for _ in range(5000))  # type: ignore[union-attr]
    assert 0.66 < counts[0] / 5000 < 0.74


def test_under_the_panic_threshold_every_endpoint_of_the_priority_serves(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, [{"address": f"127.0.0.1:{i}"} for i in range(1, 5)])
    _fail(c, 0, 1, 2)  # 25 % healthy < 50 %
    assert len({c.choose() for _ in range(40)}) == 4
    d = _cluster(loop, [{"address": f"127.0.0.1:{i}"} for i in range(1, 5)], healthy_panic_threshold=0)
    _fail(d, 0, 1, 2, 3)
    assert d.choose() is None  # panic disabled and nothing healthy: no endpoint


def test_eds_unhealthy_endpoints_are_kept_out_and_flagged(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, [{"address": "127.0.0.1:1", "health_status": "unhealthy"}, {"address": "127.0.0.1:2"},
                        {"address": "127.0.0.1:3"}])
    assert {c.choose().address for _ in range(10)} == {"127.0.0.1:2", "127.0.0.1:3"}  # type: ignore[union-attr]
    assert c.snapshot()["endpoints"][0]["health_flags"] == "/failed_eds_health"  # type: ignore[index]


def test_locality_weights_share_the_load_and_shrink_with_locality_health(loop: asyncio.AbstractEventLoop) -> None:
    eps = [{"address": f"127.0.0.1:{i}", "labels": {"zone": "a"}, "locality_weight": 1} for i in (1, 2)]
    eps += [{"address": f"127.0.0.1:{i}", "labels": {"zone": "b"}, "locality_weight": 3} for i in (3, 4)]
    c = _cluster(loop, eps, locality_weighted_lb=True)
    counts = Counter(c.choose().labels["zone"] for _ in range(4000))  # type: ignore[union-attr]
    assert 0.70 < counts["b"] / 4000 < 0.80
    _fail(c, 2)  # zone b half healthy: availability 0.7, effective weight 2.1 against 1
    counts = Counter(c.choose().labels["zone"] for _ in range(4000))  # type: ignore[union-attr]
    assert 0.63 < counts["b"] / 4000 < 0.73


def test_a_hash_picks_the_same_priority_every_time(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, [{"address": "127.0.0.1:1"}, {"address": "127.0.0.1:2"},
                        {"address": "127.0.0.1:3", "priority": 1}])
    _fail(c, 0)
    for h in (5, 69, 70, 99, 12345):
        assert len({c.choose((), h).priority for _ in range(10)}) == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(("healths", "degradeds", "loads", "dloads"), [
    ([70], [70], [70], [30]),  # 2 healthy + 2 degraded of 4: healthy 70 %, the rest to the degraded
    ([93], [46], [93], [7]),  # 4 healthy + 2 degraded of 6
    ([100], [35], [100], [0]),  # enough healthy: the degraded get nothing
    ([0, 70], [70, 0], [0, 70], [30, 0]),  # healthy availability anywhere comes before degraded
    ([0], [70], [0], [100]),  # only degraded: they take it all
])
def test_degraded_endpoints_take_only_what_healthy_ones_leave(healths: list[int], degradeds: list[int],
                                                              loads: list[int], dloads: list[int]) -> None:
    assert tiered_loads(healths, degradeds) == (loads, dloads)


def test_eds_degraded_endpoints_serve_only_when_healthy_ones_are_not_enough(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, [{"address": f"127.0.0.1:{i}"} for i in (1, 2, 3)]
                 + [{"address": "127.0.0.1:4", "health_status": "degraded"}])
    assert {c.choose().address for _ in range(200)} == {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}  # type: ignore[union-attr]
    assert c.snapshot()["endpoints"][3]["health_flags"] == "/degraded_eds_health"  # type: ignore[index]
    _fail(c, 0, 1)  # 1 healthy + 1 degraded of 4: 35 % healthy, 35 % degraded, normalized over 70
    counts = Counter(c.choose().address for _ in range(4000))  # type: ignore[union-attr]
    assert 0.44 < counts["127.0.0.1:4"] / 4000 < 0.56
    assert c.snapshot()["priority_load"] == [  # type: ignore[index]
        {"priority": 0, "load": 50, "panic": False, "candidates": 1},
        {"priority": 0, "load": 50, "panic": False, "candidates": 1, "degraded": True}]
