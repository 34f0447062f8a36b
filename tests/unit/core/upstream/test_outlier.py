"""Outlier detection as Envoy's: counts, ejection time growth, the ejection cap, the panic threshold,
success rate, and the older ``health`` form."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sofamesh.core.config.loader import from_mapping
from sofamesh.core.config.model import ClusterConfig
from sofamesh.core.errors import ConfigErrors
from sofamesh.core.upstream.cluster import Cluster
from sofamesh.core.upstream.load_balancer import LoadBalancer


class _First(LoadBalancer):
    def choose(self, endpoints):  # type: ignore[no-untyped-def]
        return endpoints[0]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _cluster(loop: asyncio.AbstractEventLoop, n: int = 3, **od: object) -> Cluster:
    cfg = ClusterConfig(name="c", endpoints=[f"127.0.0.1:{9000 + i}" for i in range(n)],  # type: ignore[arg-type]
                        outlier_detection={"consecutive_5xx": 3, "base_ejection_time_ms": 1000,  # type: ignore[arg-type]
                                           "max_ejection_percent": 100, **od})
    return Cluster(cfg, _First(), None, loop)


def test_the_third_consecutive_5xx_ejects_and_a_success_in_between_starts_over(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop)
    ep = c.endpoints[0]
    c.report_status(ep, 500)
    c.report_status(ep, 500)
    c.report_success(ep)
    c.report_status(ep, 503)
    c.report_status(ep, 500)
    assert not ep.ejected_until
    c.report_status(ep, 500)
    assert ep.ejected_until and c.ejected == 1
    assert c.stats.outlier_detection_ejections_enforced_consecutive_5xx == 1
    assert c.choose() is c.endpoints[1]  # the ejected one is skipped
    assert c.snapshot()["endpoints"][0]["health_flags"] == "/failed_outlier_check"  # type: ignore[index]
    c.close()


def test_ejection_time_grows_with_each_ejection_up_to_max_ejection_time(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, max_ejection_time_ms=2500)
    od = c.outlier
    assert od is not None
    ep = c.endpoints[0]
    spans = []
    for _ in range(4):
        now = loop.time()
        for _ in range(3):
            c.report_status(ep, 500)
        spans.append(round(ep.ejected_until - now, 1))
        od._uneject(ep)  # its time is up
    assert spans == [1.0, 2.0, 2.5, 2.5]
    c.close()


def test_max_ejection_percent_caps_ejections_but_one_endpoint_may_always_go(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, max_ejection_percent=10)
    for ep in c.endpoints:
        for _ in range(3):
            c.report_status(ep, 502)
    assert c.ejected == 1 and c.stats.outlier_detection_ejections_overflow == 2
    c.close()


def test_under_the_panic_threshold_ejected_endpoints_serve_again(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop)  # healthy_panic_threshold 50 %
    for ep in c.endpoints[:2]:
        for _ in range(3):
            c.report_status(ep, 500)
    assert c.ejected == 2
    assert c.choose() is c.endpoints[0]  # 1 of 3 healthy is under 50 %: everything may serve
    c.close()


def test_gateway_failures_and_local_origin_failures_count_as_envoy_maps_them(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, consecutive_5xx=0, consecutive_gateway_failure=2, enforcing_consecutive_gateway_failure=100)
    ep = c.endpoints[0]
    c.report_failure(ep)  # a failed connect counts as a 503 when errors are not split
    c.report_status(ep, 504)
    assert ep.ejected_until and c.stats.outlier_detection_ejections_enforced_consecutive_gateway_failure == 1
    c.close()


def test_success_rate_ejects_the_endpoint_far_below_the_others(loop: asyncio.AbstractEventLoop) -> None:
    c = _cluster(loop, n=5, consecutive_5xx=0, success_rate_request_volume=10, success_rate_stdev_factor=1000)
    for i, ep in enumerate(c.endpoints):
        ep.rq_total = 100
        ep.rq_errors = 60 if i == 4 else 0
    assert c.outlier is not None
    c.outlier._on_interval()
    assert [bool(e.ejected_until) for e in c.endpoints] == [False] * 4 + [True]
    assert c.stats.outlier_detection_ejections_enforced_success_rate == 1
    c.close()


def test_the_older_health_form_keeps_ejecting_on_failed_connects(loop: asyncio.AbstractEventLoop) -> None:
    cfg = ClusterConfig(name="c", endpoints=["127.0.0.1:1", "127.0.0.1:2"],  # type: ignore[list-item]
                        health={"consecutive_failures": 2, "ejection_ms": 500})  # type: ignore[arg-type]
    c = Cluster(cfg, _First(), None, loop)
    ep = c.endpoints[0]
    c.report_status(ep, 500)  # an answer, even a 5xx, is not what health counted
    c.report_failure(ep)
    assert not ep.ejected_until
    c.report_failure(ep)
    assert ep.ejected_until and c.choose() is c.endpoints[1]
    c.close()


def test_health_and_outlier_detection_together_name_the_replacement() -> None:
    with pytest.raises(ConfigErrors) as refused:
        from_mapping({"clusters": [{"name": "c", "health": {"consecutive_failures": 2, "ejection_ms": 500},
                                    "outlier_detection": {}}]})
    assert "health is replaced by outlier_detection" in str(refused.value)
    assert "consecutive_local_origin_failure: 2" in str(refused.value)
