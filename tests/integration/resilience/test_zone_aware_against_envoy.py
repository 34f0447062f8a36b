"""Zone-aware routing side by side with a real Envoy 1.40: a caller in zone a whose own cluster has
half its endpoints in a, calling a service with a quarter of its endpoints in a, keeps half of its
requests in a and sends the rest to the zone with residual capacity, as Envoy does; with fewer
endpoints than ``min_cluster_size`` both balance over every zone."""

from __future__ import annotations

import http.client
from collections import Counter
from typing import Any

import pytest

from sofamesh.testing import ProxyProcess, free_port

from .peers import Backend, StaticEnvoy, http_listener, socket_address

REQUESTS = 1600
LOCAL = {"a": 2, "b": 1, "c": 1}  # the caller's own service ("me"); the caller runs in zone a
UPSTREAM = {"a": 2, "b": 2, "c": 4}  # the service called ("web")


def _split(port: int, zone_of: dict[str, str]) -> dict[str, float]:
    counts: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(REQUESTS):
            conn.request("GET", "/")
            r = conn.getresponse()
            body = r.read().decode().strip()
            counts[zone_of.get(body, f"!{r.status}")] += 1
    finally:
        conn.close()
    return {z: n / REQUESTS for z, n in counts.items()}


def _placed(zones: dict[str, int], addresses: list[str]) -> list[tuple[str, list[str]]]:
    out, i = [], 0
    for zone, n in zones.items():
        out.append((zone, addresses[i:i + n]))
        i += n
    return out


def _envoy(port: int, web: list[tuple[str, list[str]]], me: list[tuple[str, list[str]]],
           zone_aware: dict[str, Any]) -> StaticEnvoy:
    def cluster(name: str, placed: list[tuple[str, list[str]]], **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
                "load_assignment": {"cluster_name": name, "endpoints": [
                    {"locality": {"zone": zone}, "lb_endpoints": [{"endpoint": {"address": socket_address(a)}}
                                                                  for a in addresses]}
                    for zone, addresses in placed]}, **extra}

    vhost = {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}
    envoy = StaticEnvoy([http_listener("web", port, vhost)],
                        [cluster("web", web, common_lb_config={"zone_aware_lb_config": zone_aware}),
                         cluster("me", me)])
    envoy.bootstrap["node"] = {"id": "caller", "cluster": "me", "locality": {"zone": "a"}}
    envoy.bootstrap["cluster_manager"] = {"local_cluster_name": "me"}
    return envoy


def _sofamesh(port: int, web: list[tuple[str, list[str]]], me: list[tuple[str, list[str]]],
              zone_aware: dict[str, Any]) -> ProxyProcess:
    def endpoints(placed: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
        return [{"address": a, "labels": {"zone": zone}} for zone, addresses in placed for a in addresses]

    return ProxyProcess({
        "node": {"locality": {"zone": "a"}}, "cluster_manager": {"local_cluster_name": "me"},
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                       "routes": [{"name": "all", "cluster": "web"}]}],
        "clusters": [{"name": "web", "endpoints": endpoints(web), "zone_aware_lb": zone_aware},
                     {"name": "me", "endpoints": endpoints(me)}]})


@pytest.mark.parametrize(("zone_aware", "expected"), [
    # a: 25 % of web, 50 % of me: 2500 x 10000 / 5000 = 50 % stays; c alone has residual capacity
    ({}, {"a": 0.5, "b": 0.0, "c": 0.5}),
    # 8 endpoints < min_cluster_size 10: no zone routing, round robin over all eight
    ({"min_cluster_size": 10}, {"a": 0.25, "b": 0.25, "c": 0.5}),
])
def test_zone_aware_routing_splits_traffic_as_envoy_does(zone_aware: dict[str, Any],
                                                         expected: dict[str, float]) -> None:
    backends = [Backend(f"w{i}") for i in range(sum(UPSTREAM.values()))]
    try:
        for b in backends:
            b.__enter__()
        web = _placed(UPSTREAM, [b.address for b in backends])
        zone_of = {name: zone for zone, addresses in _placed(UPSTREAM, [b.name for b in backends])
                   for name in addresses}
        me = _placed(LOCAL, [f"127.0.0.1:{free_port()}" for _ in range(sum(LOCAL.values()))])  # never called
        envoy_zone = {"min_cluster_size": zone_aware["min_cluster_size"]} if zone_aware else {}
        seen = {}
        port = free_port()
        with _envoy(port, web, me, envoy_zone):
            seen["envoy"] = _split(port, zone_of)
        port = free_port()
        with _sofamesh(port, web, me, zone_aware):
            seen["sofamesh"] = _split(port, zone_of)
    finally:
        for b in backends:
            b.__exit__(None, None, None)
    for who, split in seen.items():
        assert set(split) <= {"a", "b", "c"}, (who, split)  # no errors
        for zone, share in expected.items():
            assert abs(split.get(zone, 0.0) - share) < 0.06, (who, zone, seen)
