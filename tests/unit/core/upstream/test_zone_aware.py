"""Zone-aware routing as Envoy's ``zone_aware_lb_config`` decides it (``core/upstream/zone_aware.py``):
the share of requests that stays in the caller's zone, the spill-over by residual capacity, and
every case in which it is skipped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.endpoint import FAILED_ACTIVE_HC
from sofamesh.core.upstream.cluster import Cluster, link_local
from sofamesh.core.upstream.zone_aware import plan_zones, shares
from sofamesh.plugins.load_balancers.round_robin import RoundRobinFactory

N = 6000


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _eps(port: int, **zones: int) -> list[dict[str, Any]]:
    out = []
    for zone, n in zones.items():
        for _ in range(n):
            out.append({"address": f"127.0.0.1:{port}", "labels": {"zone": zone}})
            port += 1
    return out


def _pair(loop: asyncio.AbstractEventLoop, upstream: dict[str, int], local: dict[str, int], zone: str = "a",
          **zone_aware: Any) -> tuple[Cluster, Cluster]:
    rr = RoundRobinFactory()
    up = Cluster(ClusterConfig(name="up", endpoints=_eps(1000, **upstream), health=None,  # type: ignore[arg-type]
                               zone_aware_lb=zone_aware, **zone_aware.pop("_extra", {})), rr.create(), None, loop)
    me = Cluster(ClusterConfig(name="me", endpoints=_eps(2000, **local), health=None),  # type: ignore[arg-type]
                 rr.create(), None, loop)
    link_local({"up": up, "me": me}, "me", ("", zone, ""))
    return up, me


def _split(c: Cluster) -> dict[str, float]:
    counts = Counter(c.choose().labels["zone"] for _ in range(N))  # type: ignore[union-attr]
    return {z: n / N for z, n in counts.items()}


def test_shares_are_envoys_integer_ten_thousandths() -> None:
    assert shares({("", "a", ""): 1, ("", "b", ""): 2}) == {("", "a", ""): 3333, ("", "b", ""): 6666}


def test_all_traffic_stays_local_when_the_upstream_holds_at_least_the_local_share(
        loop: asyncio.AbstractEventLoop) -> None:
    up, _ = _pair(loop, {"a": 3, "b": 3}, {"a": 2, "b": 2})
    assert _split(up) == {"a": 1.0}
    assert up.snapshot()["priority_load"][0]["zone_routing"]["state"] == "direct"  # type: ignore[index]


def test_the_local_share_spills_over_to_zones_with_residual_capacity(loop: asyncio.AbstractEventLoop) -> None:
    # local: a 50 %, b 25 %, c 25 %; upstream: a 25 %, b 25 %, c 50 %. Envoy: 2500 x 10000 / 5000 =
    # 50 % stays in a; the rest goes by residual capacity, which only c has (5000 - 2500).
    up, _ = _pair(loop, {"a": 2, "b": 2, "c": 4}, {"a": 2, "b": 1, "c": 1})
    split = _split(up)
    assert 0.46 < split["a"] < 0.54 and 0.46 < split["c"] < 0.54 and "b" not in split
    zr = up.snapshot()["priority_load"][0]["zone_routing"]  # type: ignore[index]
    assert zr["state"] == "residual" and zr["local_percent"] == 50.0  # type: ignore[index]


def test_a_zone_the_local_cluster_lacks_gets_the_spill_over(loop: asyncio.AbstractEventLoop) -> None:
    # Envoy's example (issue 38758): callers in a and b, upstream in a, b and c: two thirds stay local
    up, _ = _pair(loop, {"a": 2, "b": 2, "c": 2}, {"a": 3, "b": 3})
    split = _split(up)
    assert 0.63 < split["a"] < 0.70 and 0.30 < split["c"] < 0.37 and "b" not in split


def test_routing_enabled_is_the_share_of_requests_considered(loop: asyncio.AbstractEventLoop) -> None:
    up, _ = _pair(loop, {"a": 3, "b": 3}, {"a": 1, "b": 1}, routing_enabled=50)
    assert 0.71 < _split(up)["a"] < 0.79  # half direct to a, half over all six


@pytest.mark.parametrize(("upstream", "local", "extra"), [
    ({"a": 2, "b": 2}, {"a": 1, "b": 1}, {}),  # 4 endpoints < min_cluster_size 6
    ({"a": 6}, {"a": 1, "b": 1}, {}),  # one upstream zone
    ({"b": 3, "c": 3}, {"a": 1, "b": 1}, {}),  # nothing upstream in the caller's zone
    ({"a": 3, "b": 3}, {}, {}),  # no local cluster endpoints
    ({"a": 3, "b": 3}, {"a": 1, "b": 1}, {"_extra": {"locality_weighted_lb": True}}),
])
def test_zone_routing_is_skipped_where_envoy_skips_it(loop: asyncio.AbstractEventLoop, upstream: dict[str, int],
                                                      local: dict[str, int], extra: dict[str, Any]) -> None:
    up, _ = _pair(loop, upstream, local, **extra)
    n = sum(upstream.values())
    split = _split(up)
    for zone, count in upstream.items():
        assert abs(split[zone] - count / n) < 0.06
    assert "zone_routing" not in (up.snapshot().get("priority_load") or [{}])[0]  # type: ignore[operator,index]


def test_a_local_cluster_in_panic_turns_zone_routing_off_until_it_recovers(loop: asyncio.AbstractEventLoop) -> None:
    up, me = _pair(loop, {"a": 3, "b": 3}, {"a": 2, "b": 2})
    assert _split(up) == {"a": 1.0}
    for e in me.endpoints[:3]:
        e.down |= FAILED_ACTIVE_HC
    me.health_changed()  # 25 % healthy < 50 %: the callers' own cluster is in panic
    assert 0.4 < _split(up)["a"] < 0.6
    for e in me.endpoints:
        e.down = 0
    me.health_changed()
    assert _split(up) == {"a": 1.0}


def test_fail_traffic_on_panic_serves_no_endpoint_instead_of_all(loop: asyncio.AbstractEventLoop) -> None:
    up, _ = _pair(loop, {"a": 3, "b": 3}, {"a": 1, "b": 1}, fail_traffic_on_panic=True)
    for e in up.endpoints[:4]:
        e.down |= FAILED_ACTIVE_HC
    up.health_changed()
    assert up.choose() is None
    plain, _ = _pair(loop, {"a": 3, "b": 3}, {"a": 1, "b": 1})
    for e in plain.endpoints[:4]:
        e.down |= FAILED_ACTIVE_HC
    plain.health_changed()
    assert len({plain.choose() for _ in range(100)}) == 6  # panic: every endpoint


def test_plan_zones_compares_healthy_endpoints_only() -> None:
    class E:
        def __init__(self, zone: str, healthy: bool = True) -> None:
            self.locality = ("", zone, "")
            self.healthy = healthy

    eps = [E("a"), E("a"), E("a", False), E("b"), E("b"), E("b")]
    zr = plan_zones(eps, {("", "a", ""): 1, ("", "b", ""): 1}, ("", "a", ""), 6, 100.0)  # type: ignore[arg-type]
    assert zr is not None and not zr.direct and zr.local_units == 4000 * 10000 // 5000


def test_an_unknown_local_cluster_is_named_in_the_error() -> None:
    from sofamesh.core.build import proxy_host
    from sofamesh.core.config.check import check_mapping

    errors = check_mapping({"cluster_manager": {"local_cluster_name": "mee"},
                            "clusters": [{"name": "me", "endpoints": ["127.0.0.1:1"]}]}, proxy_host())
    assert [str(e) for e in errors] == ["cluster_manager.local_cluster_name: unknown cluster 'mee' (known: me)"]
