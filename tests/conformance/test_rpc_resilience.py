"""Retries and outlier detection for RPC through real peers: one provider of three is killed while
calls are in flight, and no call fails (Bolt: sofa-rpc-node; Dubbo: dubbo2.js -> @dubbo.ts)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sofamesh.testing import ProxyProcess, free_port

from .bolt_peers import node_consumer, node_provider
from .dubbo_peers import SERVICE, Provider, call, consume, java, require_dubbo_peers

ECHO = "com.example.EchoService"
IN_FLIGHT = 240  # calls started at once, each held SLOW_MS by its provider
SLOW_MS = 400


def _sidecar(protocol: str, service: str, endpoints: list[str]) -> tuple[str, ProxyProcess]:
    port = free_port()
    return f"127.0.0.1:{port}", ProxyProcess({
        "listeners": [{"name": "rpc", "address": f"127.0.0.1:{port}", "protocols": [protocol], "routes": [{
            "name": "svc", "match": {"service": {"prefix": service}}, "cluster": "providers", "timeout_ms": 8000,
            "retry_policy": {"retry_on": ["reset", "connect-failure", "gateway-error", "retriable"],
                             "num_retries": 2}}]}],
        "clusters": [{"name": "providers", "protocol": protocol, "endpoints": endpoints, "connect_timeout_ms": 500,
                      "outlier_detection": {"consecutive_5xx": 3, "interval_ms": 1000,
                                            "base_ejection_time_ms": 30000, "max_ejection_percent": 100},
                      "circuit_breakers": {"max_retries": 1000}}]})


def _kill_under_load(proxy: ProxyProcess, victim: Callable[[], None], load: Callable[[], list[Any]]) -> list[Any]:
    """Start ``load`` (every call at once), kill the victim once the calls are in flight upstream,
    and return the load's results."""
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(load)
        deadline = time.monotonic() + 20
        while proxy.stats()["clusters"]["providers"]["upstream_rq_active"] < IN_FLIGHT * 0.9:
            assert time.monotonic() < deadline and not running.done(), proxy.stats()["clusters"]["providers"]
            time.sleep(0.01)
        victim()
        return running.result(60)


def _ejected(proxy: ProxyProcess) -> dict[str, str]:
    return {e["address"]: e["health_flags"] for e in json.loads(proxy.get("/clusters"))["providers"]["endpoints"]}


def test_bolt_calls_survive_a_provider_killed_under_load() -> None:
    with node_provider(ECHO, "A") as a, node_provider(ECHO, "B") as b, node_provider(ECHO, "C") as c:
        address, proxy = _sidecar("bolt", ECHO, [a.address, b.address, c.address])
        with proxy:
            slow = [{"method": "slow", "args": [SLOW_MS], "timeout": 8000}] * IN_FLIGHT
            during = _kill_under_load(proxy, c.stop, lambda: node_consumer(address, ECHO, slow, clients=4))
            after = node_consumer(address, ECHO, [{"method": "whoami", "timeout": 3000}] * 300, clients=4)
            stats = proxy.stats()["clusters"]["providers"]
            flags = _ejected(proxy)
    failed = [r for r in during + after if not r["ok"]]
    assert not failed, (failed[:3], len(failed), stats)
    assert {r["result"] for r in after} == {"A", "B"}
    assert stats["upstream_rq_retry"] > 0 and stats["outlier_detection_ejections_enforced_total"] >= 1
    assert flags[c.address] == "/failed_outlier_check" and flags[a.address] == flags[b.address] == "healthy"


def test_dubbo_calls_survive_a_provider_killed_under_load() -> None:
    require_dubbo_peers()
    with Provider("p1") as p1, Provider("p2") as p2, Provider("p3") as p3:
        address, proxy = _sidecar("dubbo", SERVICE, [p1.address, p2.address, p3.address])
        with proxy:
            slow = [call("slow", java("int", SLOW_MS), repeat=IN_FLIGHT)]
            during = _kill_under_load(proxy, p3.stop, lambda: consume(address, slow, timeout_s=10))
            after = consume(address, [call("whoami", repeat=300)])
            stats = proxy.stats()["clusters"]["providers"]
            flags = _ejected(proxy)
    failed = [r for r in during + after if not r["ok"]]
    assert not failed, (failed[:3], len(failed), stats)
    assert len(during) == IN_FLIGHT and {r["res"]["provider"] for r in after} == {"p1", "p2"}
    assert stats["upstream_rq_retry"] > 0 and stats["outlier_detection_ejections_enforced_total"] >= 1
    assert flags[p3.address] == "/failed_outlier_check" and flags[p1.address] == flags[p2.address] == "healthy"
