"""The dashboard's call graph from sidecars' /stats: which counters make an edge, rates over the
window, p99 from histogram differences, and the cap on proxies scraped per round."""

from __future__ import annotations

import asyncio
from types import MappingProxyType, SimpleNamespace
from typing import Any

from sofamesh.core.stats import LATENCY_BUCKETS_MS
from sofamesh.pilot.traffic import ProxyTraffic, TrafficGraph, outbound_service, p99_ms, sample_of
from sofamesh.pilot.xds.generator import NodeInfo
from sofamesh.pilot.xds.server import Stream

N = len(LATENCY_BUCKETS_MS) + 1


def _stats(total: int, errors: int, timeouts: int, buckets: list[int]) -> dict[str, Any]:
    return {
        "clusters": {
            "outbound|12200|echo": {
                "upstream_rq_total": total,
                "upstream_rq_5xx": errors,
                "upstream_rq_timeout": timeouts,
            },
            "outbound|80|v1|web": {"upstream_rq_total": 7},
            "inbound|9000|127.0.0.1": {"upstream_rq_total": 1000},
        },
        "rpc": {
            "outbound|bolt|15001|bolt|echo|sayHello": {"latency": {"buckets": buckets}},
            "inbound|9000|bolt|echo|sayHello": {"latency": {"buckets": [99] * N}},
        },
    }


def test_outbound_clusters_become_services_and_others_are_ignored() -> None:
    assert outbound_service("outbound|80|web") == "web"
    assert outbound_service("outbound|80|v1|web") == "web"
    assert outbound_service("inbound|9000|127.0.0.1") is None
    s = sample_of(_stats(10, 1, 2, [0] * N), 1.0)
    assert s.calls == {"echo": (10, 1), "web": (7, 0)}  # a timeout is in 5xx already (a 504)
    assert set(s.latency) == {"echo"}  # the outbound listener's histogram, not the inbound one


def test_p99_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    buckets = [0] * N
    buckets[2] = 98  # <= 2.5 ms
    buckets[6] = 2  # <= 50 ms
    assert p99_ms(buckets) == LATENCY_BUCKETS_MS[6]
    assert p99_ms([0] * N) is None


def test_rates_error_rate_and_p99_are_differences_over_the_window() -> None:
    graph = TrafficGraph(SimpleNamespace(streams={}), window_s=10.0)  # type: ignore[arg-type]
    pt = graph.proxies["127.0.0.1:15000"] = ProxyTraffic("app-1", "app", "127.0.0.1:15000")
    before = [0] * N
    before[7] = 1000  # old slow calls: outside the window, they must not make the p99
    after = list(before)
    after[1] += 200
    pt.samples = [sample_of(_stats(1000, 0, 0, before), 100.0), sample_of(_stats(1200, 10, 0, after), 104.0)]
    (echo, web) = graph.edges()
    assert (echo["source"], echo["destination"]) == ("app", "echo")
    assert echo["requests"] == 200 and echo["rps"] == 50.0 and echo["error_rate"] == 0.05
    assert echo["p99_ms"] == LATENCY_BUCKETS_MS[1] and echo["requests_total"] == 1200
    assert web["rps"] == 0.0 and web["p99_ms"] is None


def _stream(i: int) -> Stream:
    node = NodeInfo(f"p{i:02}", "app", metadata=MappingProxyType({"sofamesh.admin": f"127.0.0.1:{20000 + i}"}))
    return Stream(i, "sotw", f"ipv4:127.0.0.1:{30000 + i}", asyncio.Queue(), node)


def test_a_round_takes_at_most_max_proxies_and_the_next_round_the_others() -> None:
    async def main() -> None:
        ads = SimpleNamespace(streams={i: _stream(i) for i in range(5)})
        graph = TrafficGraph(ads, max_proxies=2)  # type: ignore[arg-type]
        rounds = [[t[1] for t in graph._targets()] for _ in range(3)]
        assert rounds == [["p00", "p01"], ["p02", "p03"], ["p04", "p00"]]

    asyncio.run(main())


def test_a_proxy_that_does_not_answer_is_reported_and_the_round_ends_within_the_timeout() -> None:
    async def main() -> None:
        writers: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)  # never answers
        port = server.sockets[0].getsockname()[1]
        node = NodeInfo("mute", "app", metadata=MappingProxyType({"sofamesh.admin": f"127.0.0.1:{port}"}))
        ads = SimpleNamespace(streams={1: Stream(1, "sotw", "ipv4:127.0.0.1:1", asyncio.Queue(), node)})
        graph = TrafficGraph(ads, timeout_s=0.3)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await graph.scrape_round()
        assert loop.time() - t0 < 2.0
        (p,) = graph.describe()["proxies"]
        assert p["proxy"] == "mute" and p["error"] and p["samples"] == 0
        await graph.stop()
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_the_clusters_upstream_rq_time_makes_the_p99_for_every_protocol() -> None:
    """An HTTP/1 service (no per-RPC histogram) gets its p99 from the cluster's ``upstream_rq_time``,
    summed over its subset clusters; with it present the RPC histograms are not used."""
    slow = [0] * N
    slow[9] = 3  # <= 500 ms
    fast = [0] * N
    fast[1] = 97  # <= 1 ms
    stats = _stats(100, 0, 0, [5] * N)
    stats["clusters"]["outbound|80|v1|web"]["upstream_rq_time"] = {"count": 3, "buckets": slow}
    stats["clusters"]["outbound|80|v2|web"] = {
        "upstream_rq_total": 97,
        "upstream_rq_time": {"count": 97, "buckets": fast},
    }
    s = sample_of(stats, 1.0)
    assert s.calls["web"] == (104, 0)
    assert s.latency["web"][9] == 3 and s.latency["web"][1] == 97
    assert "echo" not in s.latency  # a sidecar with upstream_rq_time: the RPC histograms are not read
    assert p99_ms(s.latency["web"]) == LATENCY_BUCKETS_MS[9]


ENVOY_TEXT = """# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||web"} 11
envoy_cluster_upstream_rq_total{envoy_cluster_name="pilot"} 3
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="outbound|80||web"} 7
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="outbound|80||web"} 4
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web",le="0.5"} 0
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web",le="1"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web",le="5"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web",le="250"} 7
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web",le="60000"} 7
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web",le="3600000"} 8
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web",le="+Inf"} 8
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="outbound|80||web"} 1500.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="outbound|80||web"} 8
"""


def test_envoys_prometheus_counters_and_buckets_make_the_same_sample() -> None:
    from sofamesh.pilot.traffic import envoy_sample_of

    s = envoy_sample_of(ENVOY_TEXT, 2.0)
    assert s.calls == {"web": (11, 4)}  # the non-outbound "pilot" cluster is not an edge
    web = s.latency["web"]
    assert sum(web) == 8 and web[LATENCY_BUCKETS_MS.index(1)] == 1 and web[LATENCY_BUCKETS_MS.index(250)] == 6
    assert web[-1] == 1  # over 30 s: Envoy's bounds past ours count in +Inf
    assert p99_ms(web) is None and p99_ms([*web[:-1], 0]) == 250
