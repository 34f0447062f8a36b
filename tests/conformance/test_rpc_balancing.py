"""Balancing and health checking for RPC through real peers: dubbo2.js calls @dubbo.ts providers
(and sofa-rpc-node calls sofa-rpc-node providers) through a sidecar whose route hashes the first
argument (as Dubbo's ConsistentHashLoadBalance and SOFARPC's consistent hash do), and each key stays
on one provider; Bolt (sofa-rpc-node) and Dubbo heartbeats as active health
checks take a stopped provider out."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest

from sofamesh.testing import ProxyProcess, free_port

from .bolt_peers import node_consumer, node_provider
from .dubbo_peers import SERVICE, Provider, call, consume, java, require_dubbo_peers

ECHO = "com.example.EchoService"

KEYS = 24


@pytest.mark.parametrize("lb", ["ring_hash", "maglev"])
def test_dubbo_consistent_hash_on_the_first_argument_keeps_each_key_on_one_provider(lb: str) -> None:
    require_dubbo_peers()
    with Provider("p1") as p1, Provider("p2") as p2, Provider("p3") as p3:
        port = free_port()
        with ProxyProcess({
            "listeners": [{"name": "rpc", "address": f"127.0.0.1:{port}", "protocols": ["dubbo"], "routes": [{
                "name": "svc", "match": {"service": {"exact": SERVICE}}, "cluster": "providers",
                "hash_policy": [{"argument": {"index": 0}}]}]}],
            "clusters": [{"name": "providers", "protocol": "dubbo", "lb": lb,
                          "endpoints": [p1.address, p2.address, p3.address]}]}) as proxy:
            calls = [call("whoami", java("java.lang.String", f"order-{i}"), repeat=4) for i in range(KEYS)]
            results = consume(f"127.0.0.1:{port}", calls)
            stats = proxy.stats()["clusters"]["providers"]
    assert len(results) == KEYS * 4 and all(r["ok"] for r in results), results[:3]
    by_key: dict[int, set[str]] = defaultdict(set)
    for i, r in enumerate(results):
        by_key[i // 4].add(r["res"]["provider"])
    assert all(len(p) == 1 for p in by_key.values()), dict(by_key)
    assert len(set().union(*by_key.values())) >= 2  # the keys spread over the providers
    assert stats["upstream_rq_total"] == KEYS * 4


def test_bolt_consistent_hash_on_the_first_argument_keeps_each_key_on_one_provider() -> None:
    with node_provider(ECHO, "A") as a, node_provider(ECHO, "B") as b, node_provider(ECHO, "C") as c:
        port = free_port()
        with ProxyProcess({
            "listeners": [{"name": "rpc", "address": f"127.0.0.1:{port}", "protocols": ["bolt"], "routes": [{
                "name": "svc", "match": {"service": {"prefix": ECHO}}, "cluster": "providers",
                "hash_policy": [{"argument": {"index": 0}}]}]}],
            "clusters": [{"name": "providers", "protocol": "bolt", "lb": "ring_hash",
                          "endpoints": [a.address, b.address, c.address]}]}):
            calls = [{"method": "echo", "args": [f"order-{i}"], "timeout": 3000} for i in range(KEYS) for _ in range(4)]
            results = node_consumer(f"127.0.0.1:{port}", ECHO, calls, clients=2)
    assert len(results) == KEYS * 4 and all(r["ok"] for r in results), results[:3]
    by_key: dict[str, set[str]] = defaultdict(set)
    for r in results:
        tag, _, key = str(r["result"]).partition(":")
        by_key[key].add(tag)
    assert len(by_key) == KEYS and all(len(p) == 1 for p in by_key.values()), dict(by_key)
    assert len(set().union(*by_key.values())) >= 2


# -- the protocol's own probe as an active health check (Bolt and Dubbo heartbeats) -----------------
def _flags(proxy: ProxyProcess) -> dict[str, str]:
    return {e["address"]: e["health_flags"] for e in json.loads(proxy.get("/clusters"))["providers"]["endpoints"]}


def _settled(proxy: ProxyProcess, expect: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while (flags := _flags(proxy)) != expect and time.monotonic() < deadline:
        time.sleep(0.05)
    return flags


def _probed(protocol: str, endpoints: list[str], port: int) -> ProxyProcess:
    return ProxyProcess({
        "listeners": [{"name": "rpc", "address": f"127.0.0.1:{port}", "protocols": [protocol],
                       "routes": [{"name": "svc", "cluster": "providers"}]}],
        "clusters": [{"name": "providers", "protocol": protocol, "endpoints": endpoints, "health_checks": [{
            "timeout_ms": 300, "interval_ms": 300, "no_traffic_interval_ms": 300, "unhealthy_threshold": 2,
            "protocol_health_check": {}}]}]})


def test_dubbo_heartbeats_as_health_checks_take_a_stopped_provider_out() -> None:
    require_dubbo_peers()
    with Provider("p1") as p1, Provider("p2") as p2:
        port = free_port()
        with _probed("dubbo", [p1.address, p2.address], port) as proxy:
            before = _settled(proxy, {p1.address: "healthy", p2.address: "healthy"})
            p2.stop()
            after = _settled(proxy, {p1.address: "healthy", p2.address: "/failed_active_hc"})
            results = consume(f"127.0.0.1:{port}", [call("whoami", repeat=20)])
            stats = proxy.stats()["clusters"]["providers"]
    assert before == {p1.address: "healthy", p2.address: "healthy"}
    assert after == {p1.address: "healthy", p2.address: "/failed_active_hc"}
    assert {r["res"]["provider"] for r in results} == {"p1"} and all(r["ok"] for r in results)
    assert stats["health_check_success"] >= 2 and stats["health_check_failure"] >= 2


def test_bolt_heartbeats_as_health_checks_take_a_stopped_provider_out() -> None:
    with node_provider(ECHO, "A") as a, node_provider(ECHO, "B") as b:
        port = free_port()
        with _probed("bolt", [a.address, b.address], port) as proxy:
            before = _settled(proxy, {a.address: "healthy", b.address: "healthy"})
            b.stop()
            after = _settled(proxy, {a.address: "healthy", b.address: "/failed_active_hc"})
            results = node_consumer(f"127.0.0.1:{port}", ECHO, [{"method": "whoami", "timeout": 3000}] * 20)
    assert before == {a.address: "healthy", b.address: "healthy"}
    assert after == {a.address: "healthy", b.address: "/failed_active_hc"}
    assert {r["result"] for r in results} == {"A"} and all(r["ok"] for r in results)
