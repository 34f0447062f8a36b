"""Retries, outlier detection and circuit breakers on Thrift, a protocol that comes from a plugin: the
mechanisms reach it only through the codec contract (``Codec.classify`` and ``local_reply``), with real
thriftpy2 clients and servers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from test_thrift_through_proxy import ThriftServer, client, thrift_config, thrift_server  # noqa: F401

from sofamesh.testing import ProxyProcess


def _flags(proxy: ProxyProcess) -> dict[str, str]:
    return {e["address"]: e["health_flags"] for e in json.loads(proxy.get("/clusters"))["echo"]["endpoints"]}


def test_calls_survive_a_stopped_provider_by_retries_and_its_ejection(
        thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:  # noqa: F811
    a, b, c = thrift_server("up-a"), thrift_server("up-b"), thrift_server("up-c")
    cfg, port = thrift_config(
        [{"cluster": "echo", "timeout_ms": 8000,
          "retry_policy": {"retry_on": ["reset", "connect-failure", "gateway-error"], "num_retries": 2}}],
        [{"name": "echo", "endpoints": [a.address, b.address, c.address], "connect_timeout_ms": 500,
          "outlier_detection": {"consecutive_5xx": 3, "interval_ms": 1000, "base_ejection_time_ms": 30000,
                                "max_ejection_percent": 100},
          # 20 callers lose a provider at once: Envoy's default of 3 retries in flight would shed
          # some of them (retry overflow) on a slow machine, which is not what this test is about
          "circuit_breakers": {"max_retries": 100}}])
    proxy = sofamesh_proxy(cfg)
    warm = client(port, [["echo", "w{i}"]] * 3, "--threads", "6")
    assert all(r["ok"].startswith("up-") for rs in warm for r in rs), warm
    c.stop()
    got: list[list[dict[str, Any]]] = client(port, [["echo", "c{i}"]] * 10, "--threads", "20", timeout=120)
    results = [r for rs in got for r in rs]
    stats = proxy.stats()["clusters"]["echo"]
    assert len(results) == 200 and all("ok" in r for r in results), ([r for r in results if "ok" not in r][:3], stats)
    assert {r["ok"].split(":")[0] for r in results} <= {"up-a", "up-b"}
    assert stats["upstream_rq_retry"] > 0 and stats["outlier_detection_ejections_enforced_total"] >= 1
    flags = _flags(proxy)
    assert flags[c.address] == "/failed_outlier_check" and flags[a.address] == flags[b.address] == "healthy"


def test_a_circuit_breaker_answers_the_overflow_at_once_with_an_application_exception(
        thrift_server: Callable[..., ThriftServer], sofamesh_proxy: Callable[..., ProxyProcess]) -> None:  # noqa: F811
    up = thrift_server("up-slow")
    cfg, port = thrift_config([{"cluster": "echo", "timeout_ms": 8000}],
                              [{"name": "echo", "endpoints": [up.address],
                                "circuit_breakers": {"max_requests": 2}}])
    proxy = sofamesh_proxy(cfg)
    got: list[list[dict[str, Any]]] = client(port, [["slow", 1500]], "--threads", "10", timeout=60)
    results = [r for rs in got for r in rs]
    served = [r for r in results if "ok" in r]
    refused = [r for r in results if "ok" not in r]
    assert 1 <= len(served) <= 2, results  # never more than max_requests upstream at once
    assert len(served) + len(refused) == 10
    assert all(r["error"] == "TApplicationException" and "503" in r["message"] for r in refused), refused
    stats = proxy.stats()["clusters"]["echo"]
    assert stats["upstream_rq_active_overflow"] + stats["upstream_rq_pending_overflow"] == len(refused), stats
