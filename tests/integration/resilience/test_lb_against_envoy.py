"""Load balancing side by side with a real Envoy: (c) ring hash and Maglev on a header keep each key
on one endpoint and move about 1/N of the keys when one of N endpoints goes -- the very same keys
to the very same endpoints as Envoy; (d) priority failover under active HTTP health checks. And an
HTTP health check takes a hung endpoint out within interval x unhealthy_threshold."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, free_port

from .peers import HEALTH_PATH, Backend, StaticEnvoy, http_listener, prioritized_cluster, static_cluster

KEYS = 150


def names(port: int, requests: list[dict[str, str]]) -> list[str]:
    """GET / with each header set on one keep-alive connection: the name of the backend that answered
    (``!<status>`` for an error)."""
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for headers in requests:
            conn.request("GET", "/", headers=headers)
            r = conn.getresponse()
            body = r.read().decode().strip()
            out.append(body if r.status == 200 else f"!{r.status}")
    finally:
        conn.close()
    return out


def keyed(port: int) -> dict[str, str]:
    """Each key sent twice: key -> the backend that served it (``?`` when the two differed)."""
    reqs = [{"x-user": f"user-{i}"} for i in range(KEYS)]
    first, second = names(port, reqs), names(port, reqs)
    return {f"user-{i}": a if a == b else "?" for i, (a, b) in enumerate(zip(first, second, strict=True))}


# -- (c) hash balancing on a header ------------------------------------------------------------------
ENVOY_LB = {"ring_hash": ("RING_HASH", {"ring_hash_lb_config": {"minimum_ring_size": 1024}}),
            "maglev": ("MAGLEV", {"maglev_lb_config": {"table_size": 65537}})}


def hash_resources(port: int, lb: str, addresses: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Scenario (c) in Envoy's terms (listeners, clusters); the xDS test serves the same to a sidecar."""
    policy, extra = ENVOY_LB[lb]
    vhost = {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {
        "cluster": "web", "hash_policy": [{"header": {"header_name": "x-user"}}]}}]}
    cluster = static_cluster("web", addresses, **extra)
    cluster["lb_policy"] = policy
    return [http_listener("web", port, vhost)], [cluster]


def _hash_envoy(port: int, lb: str, backends: list[Backend]) -> StaticEnvoy:
    return StaticEnvoy(*hash_resources(port, lb, [b.address for b in backends]))


def _hash_sofamesh(port: int, lb: str, backends: list[Backend]) -> ProxyProcess:
    return ProxyProcess({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"], "routes": [{
            "name": "all", "cluster": "web", "hash_policy": [{"header": {"header_name": "x-user"}}]}]}],
        "clusters": [{"name": "web", "lb": lb, "endpoints": [b.address for b in backends]}]})


def _observe_hashing(before: dict[str, str], after: dict[str, str], removed: str, n: int) -> dict[str, Any]:
    moved = [k for k in before if after[k] != before[k]]
    return {"each_key_on_one_endpoint": "?" not in before.values() and "?" not in after.values(),
            "every_endpoint_used": len(set(before.values())) == n,
            "removed_endpoints_keys_moved": all(k in moved for k, v in before.items() if v == removed),
            "about_one_nth_moved": 0.5 / n < len(moved) / len(before) < 1.8 / n,
            "before": before, "after": after}


@pytest.mark.parametrize("lb", ["ring_hash", "maglev"])
def test_hash_balancing_on_a_header_keeps_keys_and_moves_one_nth_as_envoy_does(lb: str) -> None:
    with Backend("b1") as b1, Backend("b2") as b2, Backend("b3") as b3, Backend("b4") as b4:
        backends = [b1, b2, b3, b4]
        seen: dict[str, dict[str, Any]] = {}
        for who, start in (("envoy", _hash_envoy), ("sofamesh", _hash_sofamesh)):
            port = free_port()
            with start(port, lb, backends):
                before = keyed(port)
            port = free_port()
            with start(port, lb, backends[:3]):
                after = keyed(port)
            seen[who] = _observe_hashing(before, after, "b4", 4)
    assert seen["sofamesh"] == seen["envoy"]
    e = seen["envoy"]
    assert e["each_key_on_one_endpoint"] and e["every_endpoint_used"]
    assert e["removed_endpoints_keys_moved"] and e["about_one_nth_moved"]


# -- (d) priority failover -----------------------------------------------------------------------------
HC_INTERVAL_MS = 300
HC_TIMEOUT_MS = 200
UNHEALTHY_THRESHOLD = 2


def _envoy_hc() -> dict[str, Any]:
    return {"timeout": f"{HC_TIMEOUT_MS / 1000}s", "interval": f"{HC_INTERVAL_MS / 1000}s",
            "no_traffic_interval": f"{HC_INTERVAL_MS / 1000}s", "unhealthy_threshold": UNHEALTHY_THRESHOLD,
            "healthy_threshold": 1, "http_health_check": {"path": HEALTH_PATH}}


def _sofamesh_hc() -> dict[str, Any]:
    return {"timeout_ms": HC_TIMEOUT_MS, "interval_ms": HC_INTERVAL_MS, "no_traffic_interval_ms": HC_INTERVAL_MS,
            "unhealthy_threshold": UNHEALTHY_THRESHOLD, "healthy_threshold": 1,
            "http_health_check": {"path": HEALTH_PATH}}


def failover_resources(port: int, by_priority: list[list[str]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Scenario (d) in Envoy's terms: priorities under an HTTP health check."""
    vhost = {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}
    return [http_listener("web", port, vhost)], [prioritized_cluster("web", by_priority, health_checks=[_envoy_hc()])]


def _failover_envoy(port: int, by_priority: list[list[str]]) -> StaticEnvoy:
    return StaticEnvoy(*failover_resources(port, by_priority))


def _failover_sofamesh(port: int, by_priority: list[list[str]]) -> ProxyProcess:
    return ProxyProcess({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                       "routes": [{"name": "all", "cluster": "web"}]}],
        "clusters": [{"name": "web", "health_checks": [_sofamesh_hc()],
                      "endpoints": [{"address": a, "priority": p} for p, addrs in enumerate(by_priority)
                                    for a in addrs]}]})


def _flags(proxy: StaticEnvoy | ProxyProcess) -> dict[str, str]:
    if isinstance(proxy, StaticEnvoy):
        return proxy.health_flags("web")
    return {e["address"]: e["health_flags"] for e in json.loads(proxy.get("/clusters"))["web"]["endpoints"]}


def settled(proxy: StaticEnvoy | ProxyProcess, expect: dict[str, str]) -> dict[str, str]:
    """Wait (bounded) until the health flags are ``expect``; return what they were last."""
    deadline = time.monotonic() + 10
    while True:
        flags = _flags(proxy)
        if all(flags.get(a) == f for a, f in expect.items()) or time.monotonic() > deadline:
            return flags
        time.sleep(0.05)


def test_priority_failover_under_health_checks_as_envoy_does() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]  # nothing listens there
    with Backend("p0") as p0, Backend("p1a") as p1a, Backend("p1b") as p1b:
        all_down = [dead, [p1a.address, p1b.address]]
        half_down = [[p0.address, dead[0]], [p1a.address]]
        seen: dict[str, dict[str, Any]] = {}
        for who, start in (("envoy", _failover_envoy), ("sofamesh", _failover_sofamesh)):
            port = free_port()
            with start(port, all_down) as proxy:
                expect = {dead[0]: "/failed_active_hc", dead[1]: "/failed_active_hc",
                          p1a.address: "healthy", p1b.address: "healthy"}
                flags = settled(proxy, expect)
                served = Counter(names(port, [{}] * 200))
            port = free_port()
            with start(port, half_down) as proxy:
                settled(proxy, {dead[0]: "/failed_active_hc", p0.address: "healthy"})
                split = Counter(names(port, [{}] * 1000))
            seen[who] = {"flags": flags, "all_p0_down_served_by": served,
                         "half_p0_down_share_at_p0_about_70_percent": 0.62 < split["p0"] / 1000 < 0.78,
                         "half_p0_down_errors": sum(v for k, v in split.items() if k.startswith("!"))}
    assert seen["sofamesh"] == seen["envoy"], seen
    assert seen["envoy"]["all_p0_down_served_by"] == {"p1a": 100, "p1b": 100}
    assert seen["envoy"]["half_p0_down_share_at_p0_about_70_percent"]


# -- an HTTP health check takes a hung endpoint out ------------------------------------------------
def test_an_http_health_check_takes_a_hung_endpoint_out_within_interval_times_threshold() -> None:
    with Backend("ok") as ok, Backend("hung") as hung:
        port = free_port()
        with _failover_sofamesh(port, [[ok.address, hung.address]]) as proxy:
            assert settled(proxy, {ok.address: "healthy", hung.address: "healthy"})[hung.address] == "healthy"
            assert Counter(names(port, [{}] * 10)) == {"ok": 5, "hung": 5}
            hung.hang.set()
            t0 = time.monotonic()
            flags = settled(proxy, {hung.address: "/failed_active_hc/active_hc_timeout"})
            taken_out = time.monotonic() - t0
            after = Counter(names(port, [{}] * 20))
            stats = proxy.stats()["clusters"]["web"]
    assert flags[hung.address] == "/failed_active_hc/active_hc_timeout" and flags[ok.address] == "healthy"
    # each check of the hung endpoint waits out its timeout; checks start an interval apart
    bound = UNHEALTHY_THRESHOLD * (HC_INTERVAL_MS + HC_TIMEOUT_MS) / 1000.0
    assert taken_out < bound + 0.3, (taken_out, bound)
    assert after == {"ok": 20}
    assert stats["health_check_failure"] >= UNHEALTHY_THRESHOLD and stats["health_check_success"] >= 2
