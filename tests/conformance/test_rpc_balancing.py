"""Consistent hashing for RPC through real peers: dubbo2.js calls @dubbo.ts providers through a
sidecar whose route hashes the first argument (as Dubbo's ConsistentHashLoadBalance does), and each
key stays on one provider."""

from __future__ import annotations

from collections import defaultdict

import pytest

from sofamesh.testing import ProxyProcess, free_port

from .dubbo_peers import SERVICE, Provider, call, consume, java, require_dubbo_peers

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
