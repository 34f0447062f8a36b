"""The built-in balancers: distribution, the power of two choices, ring hash and Maglev tables and
how few keys move when an endpoint goes, slow start."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import xxhash

from sofamesh.core.config.model import EndpointConfig
from sofamesh.core.endpoint import Endpoint
from sofamesh.plugins.load_balancers.least_request import LeastRequestFactory
from sofamesh.plugins.load_balancers.maglev import MaglevFactory, build_table
from sofamesh.plugins.load_balancers.random import RandomFactory
from sofamesh.plugins.load_balancers.ring_hash import Ring, RingHashFactory
from sofamesh.plugins.load_balancers.round_robin import RoundRobinFactory


def _eps(n: int, weights: list[int] | None = None) -> list[Endpoint]:
    return [Endpoint(EndpointConfig(address=f"10.0.0.{i + 1}:80", weight=(weights[i] if weights else 1)))
            for i in range(n)]


def _keys(n: int) -> list[int]:
    return [xxhash.xxh64_intdigest(f"user-{i}".encode()) for i in range(n)]


def test_round_robin_rotates_and_weights_smoothly() -> None:
    eps = _eps(3)
    lb = RoundRobinFactory().create()
    assert [lb.choose(eps) for _ in range(6)] == eps + eps
    weighted = _eps(2, [1, 3])
    counts = Counter(lb.choose(weighted) for _ in range(400))
    assert counts[weighted[1]] == 300 and counts[weighted[0]] == 100


def test_round_robin_slow_start_ramps_a_joining_endpoint_up_over_its_window() -> None:
    eps = _eps(2)
    lb = RoundRobinFactory().create({"slow_start_config": {"slow_start_window_ms": 10_000, "aggression": 1.0,
                                                           "min_weight_percent": 10}})
    eps[1].slow_start_since = time.monotonic()  # just joined
    lb.endpoints_changed(eps)
    early = Counter(lb.choose(eps) for _ in range(1100))
    assert 90 <= early[eps[1]] <= 110  # 10 % of a full weight (1 s of 10 s, the floor): about 1 in 11
    eps[1].slow_start_since = time.monotonic() - 5.0  # half way: weight 0.5
    lb.endpoints_changed(eps)
    half = Counter(lb.choose(eps) for _ in range(1500))
    assert 480 <= half[eps[1]] <= 520
    eps[1].slow_start_since = time.monotonic() - 20.0  # window over: plain rotation
    lb.endpoints_changed(eps)
    assert Counter(lb.choose(eps) for _ in range(100))[eps[1]] == 50


def test_least_request_prefers_the_endpoint_with_fewer_active_requests() -> None:
    eps = _eps(2)
    eps[1].active_rq = 10
    lb = LeastRequestFactory().create()
    counts = Counter(lb.choose(eps) for _ in range(4000))
    assert 0.70 < counts[eps[0]] / 4000 < 0.80  # both draws must hit the busy one: 1/4 of the time


def test_least_request_with_more_choices_never_picks_the_busiest_of_many() -> None:
    eps = _eps(3)
    eps[0].active_rq, eps[1].active_rq, eps[2].active_rq = 5, 1, 3
    lb = LeastRequestFactory().create({"choice_count": 50})
    assert Counter(lb.choose(eps) for _ in range(200)) == {eps[1]: 200}


def test_least_request_scales_unequal_weights_by_active_requests_with_the_bias() -> None:
    eps = _eps(2, [1, 3])
    eps[1].active_rq = 2  # 3 / (2 + 1) ^ 1 = 1: as heavy as the idle one
    lb = LeastRequestFactory().create({"active_request_bias": 1.0})
    counts = Counter(lb.choose(eps) for _ in range(6000))
    assert 0.45 < counts[eps[0]] / 6000 < 0.55
    flat = LeastRequestFactory().create({"active_request_bias": 0.0})
    counts = Counter(flat.choose(eps) for _ in range(6000))
    assert 0.70 < counts[eps[1]] / 6000 < 0.80


def test_least_request_with_unequal_weights_follows_an_edf_schedule_as_envoy() -> None:
    eps = _eps(3, [1, 2, 5])
    lb = LeastRequestFactory().create({"active_request_bias": 0.0})
    picks = [lb.choose(eps) for _ in range(800)]
    for start in range(0, 800, 8):  # every 8 turns exactly 1, 2 and 5 (a draw by weight would wander)
        window = Counter(picks[start:start + 8])
        assert sorted(window.values()) == [1, 2, 5], (start, window)
    busy = LeastRequestFactory().create({"active_request_bias": 1.0})
    eps[2].active_rq = 4  # 5 / (4 + 1) = 1: now as heavy as the first
    counts = Counter(busy.choose(eps) for _ in range(400))
    assert counts[eps[0]] == counts[eps[2]] and abs(counts[eps[1]] - 200) <= 1


def test_random_rejects_settings() -> None:
    with pytest.raises(ValueError, match="takes no settings"):
        RandomFactory().create({"x": 1})


def test_ring_hash_keeps_each_key_on_one_endpoint_and_moves_about_one_nth_when_one_goes() -> None:
    eps = _eps(4)
    lb = RingHashFactory().create()
    assert lb.needs_hash
    keys = _keys(2000)
    first = {k: lb.choose(eps, k) for k in keys}
    assert all(lb.choose(eps, k) is first[k] for k in keys)
    share = Counter(first.values())
    assert all(350 < share[e] < 650 for e in eps), share
    lb.endpoints_changed(eps[:3])
    after = {k: lb.choose(eps[:3], k) for k in keys}
    moved = sum(1 for k in keys if after[k] is not first[k])
    gone = sum(1 for k in keys if first[k] is eps[3])
    assert all(after[k] is not eps[3] for k in keys)
    assert gone <= moved < gone * 1.6  # the removed endpoint's keys, and few others (new entries)
    assert 0.15 < moved / len(keys) < 0.40


def test_ring_hash_ring_has_the_minimum_size_and_entries_by_weight() -> None:
    ring = Ring(_eps(4), 1024, 8_388_608)
    assert len(ring.hashes) == 1024 and ring.hashes == sorted(ring.hashes)
    weighted = Ring(_eps(2, [1, 3]), 1024, 8_388_608)
    counts = Counter(weighted.endpoints)
    assert sorted(counts.values()) == [256, 768]  # minimum_ring_size entries, shared by weight
    small = Ring(_eps(3), 10, 12)
    assert len(small.hashes) == 12  # capped by maximum_ring_size


def test_ring_hash_without_a_hash_picks_at_random() -> None:
    eps = _eps(3)
    lb = RingHashFactory().create()
    assert len({lb.choose(eps) for _ in range(200)}) == 3


def test_maglev_table_is_full_and_even_and_moves_about_one_nth_when_one_goes() -> None:
    eps = _eps(5)
    table = build_table(eps, 65537)
    counts = Counter(table)
    assert sum(counts.values()) == 65537
    assert max(counts.values()) - min(counts.values()) <= 1  # the paper's near-perfect balance
    smaller = build_table(eps[:4], 65537)
    moved = sum(1 for a, b in zip(table, smaller, strict=True) if a is not b)
    assert counts[eps[4]] <= moved < counts[eps[4]] * 1.5
    lb = MaglevFactory().create({"table_size": 251})
    keys = _keys(500)
    assert all(lb.choose(eps, k) is lb.choose(eps, k) for k in keys)


def test_maglev_weights_shape_the_table() -> None:
    eps = _eps(2, [1, 2])
    counts = Counter(build_table(eps, 65537))
    assert abs(counts[eps[1]] / 65537 - 2 / 3) < 0.01


def test_maglev_table_size_must_be_prime() -> None:
    with pytest.raises(ValueError, match="not a prime"):
        MaglevFactory().create({"table_size": 65536})


def test_check_config_names_a_balancers_bad_setting_at_its_path() -> None:
    from sofamesh.core.build import proxy_host
    from sofamesh.core.config.check import check_mapping

    errors = check_mapping({"clusters": [
        {"name": "a", "lb": "maglev", "lb_config": {"table_size": 4}, "endpoints": ["127.0.0.1:1"]},
        {"name": "b", "lb": "least_request", "lb_config": {"choise_count": 3}, "endpoints": ["127.0.0.1:1"]}]},
        proxy_host())
    assert [str(e) for e in errors] == [
        "clusters[0].lb_config.table_size: maglev: table_size 4 is not a prime number",
        "clusters[1].lb_config.choise_count: least_request: Extra inputs are not permitted"]


def test_a_cluster_of_one_endpoint_asks_only_balancers_that_might_refuse_it() -> None:
    import asyncio
    from collections.abc import Sequence

    from sofamesh.core.config.model import ClusterConfig
    from sofamesh.core.upstream.cluster import Cluster
    from sofamesh.core.upstream.load_balancer import LoadBalancer

    class Refusing(LoadBalancer):
        """A third-party balancer that may refuse even a sole endpoint (it does not say otherwise)."""

        def __init__(self) -> None:
            self.asked = 0

        def choose(self, endpoints: Sequence[Endpoint], hash: int | None = None) -> Endpoint | None:
            self.asked += 1
            return None

    loop = asyncio.new_event_loop()
    try:
        cfg = ClusterConfig(name="c", endpoints=["10.0.0.1:80"])  # type: ignore[list-item]
        refusing = Refusing()
        assert Cluster(cfg, refusing, None, loop).choose() is None and refusing.asked == 1
        for factory in (RoundRobinFactory(), RandomFactory(), LeastRequestFactory()):
            lb = factory.create()
            assert lb.picks_sole_endpoint
            c = Cluster(cfg, lb, None, loop)
            assert c.choose() is c.endpoints[0]
            assert lb.choose(c.endpoints) is c.endpoints[0]  # what the call would have given
        two = Cluster(ClusterConfig(name="c", endpoints=["10.0.0.1:80", "10.0.0.2:80"]),  # type: ignore[list-item]
                      RoundRobinFactory().create(), None, loop)
        assert {two.choose().address for _ in range(4)} == {"10.0.0.1:80", "10.0.0.2:80"}  # type: ignore[union-attr]
        assert not RingHashFactory().create().picks_sole_endpoint and not MaglevFactory().create().picks_sole_endpoint
    finally:
        loop.close()
