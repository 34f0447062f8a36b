"""``/stats?usedonly``: what a scraper reads of a sidecar that holds many clusters and uses few."""

from __future__ import annotations

from sofamesh.core.admin import used_only
from sofamesh.core.stats import ClusterStats, ListenerStats, RpcStats


def test_usedonly_keeps_only_nonzero_counters_and_what_holds_any() -> None:
    used, idle = ClusterStats(), ClusterStats()
    used.upstream_rq_total, used.upstream_rq_2xx = 5, 5
    rpc_used, rpc_idle = RpcStats(), RpcStats()
    rpc_used.requests = 5
    rpc_used.latency.record(3.0)
    lst = ListenerStats()
    lst.downstream_rq_2xx = 5
    lst.latency.record(3.0)
    snap = {
        "server": {"version": "x"},
        "listeners": {"out": lst.snapshot(), "idle": ListenerStats().snapshot()},
        "clusters": {"outbound|80|a": used.snapshot(), "outbound|80|b": idle.snapshot()},
        "rpc": {"out|bolt|a|m": rpc_used.snapshot(), "out|bolt|b|m": rpc_idle.snapshot()},
        "filters": {"out|authz.rbac": {"denied": 0, "allowed": 2}, "out|quota": {"limited": 0}},
    }
    doc = used_only(snap)
    assert doc["clusters"] == {"outbound|80|a": {"upstream_rq_total": 5, "upstream_rq_2xx": 5}}
    assert list(doc["rpc"]) == ["out|bolt|a|m"] and doc["rpc"]["out|bolt|a|m"]["latency"]["count"] == 1
    assert list(doc["listeners"]) == ["out"] and doc["listeners"]["out"]["downstream_rq_2xx"] == 5
    assert doc["listeners"]["out"]["latency"]["count"] == 1
    assert doc["filters"] == {"out|authz.rbac": {"allowed": 2}}
    assert doc["server"] == {"version": "x"}


def test_a_clusters_upstream_rq_time_is_kept_when_used_and_exported_as_a_histogram() -> None:
    from bisect import bisect_left

    from sofamesh.core.admin import prometheus_text
    from sofamesh.core.stats import LATENCY_BUCKETS_MS

    used, idle = ClusterStats(), ClusterStats()
    used.upstream_rq_total = 3
    for ms in (0.7, 180.0, 220.0):
        used.upstream_rq_time[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
    snap = {
        "server": {},
        "listeners": {},
        "clusters": {"outbound|80|a": used.snapshot(), "outbound|80|b": idle.snapshot()},
        "rpc": {},
        "filters": {},
    }
    rq_time = used_only(snap)["clusters"]["outbound|80|a"]["upstream_rq_time"]
    assert rq_time["count"] == 3 and rq_time["p99_ms"] == 250 and rq_time["p50_ms"] == 250
    assert "outbound|80|b" not in used_only(snap)["clusters"]  # no requests, no samples: left out
    text = prometheus_text([snap])
    assert 'sofamesh_upstream_rq_time_ms_bucket{cluster="outbound|80|a",le="1"} 1' in text
    assert 'sofamesh_upstream_rq_time_ms_bucket{cluster="outbound|80|a",le="250"} 3' in text
    assert 'sofamesh_upstream_rq_time_ms_count{cluster="outbound|80|a"} 3' in text
    assert "sofamesh_upstream_rq_time_ms_sum" not in text
