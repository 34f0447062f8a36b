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
