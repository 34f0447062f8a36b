"""What one scrape of the dashboard's call graph costs Pilot's event loop: parsing a sidecar's
``/stats`` (full, and ``?usedonly``) into a call-graph sample, for a sidecar holding 1000 clusters
of which some are in use. Synthetic counters in the admin's own shapes; no sockets.

    .venv/bin/python benchmarks/stats_scrape.py
"""

from __future__ import annotations

import json
import time
from typing import Any

from sofamesh.core.admin import used_only
from sofamesh.core.stats import ClusterStats, RpcStats
from sofamesh.pilot.traffic import MAX_STATS_BYTES, sample_of


def snapshot(clusters: int, used: int) -> dict[str, Any]:
    cl, rpc = {}, {}
    for i in range(clusters):
        c, r = ClusterStats(), RpcStats()
        if i < used:
            c.upstream_rq_total = c.upstream_rq_2xx = c.upstream_cx_total = 1000
            r.requests = 1000
            r.statuses[0] = 1000
            for k in range(50):
                r.latency.record(k * 3.0)
        cl[f"outbound|80|svc{i}"] = c.snapshot()
        rpc[f"outbound|bolt|12220|bolt|svc{i}|m"] = r.snapshot()
    return {"server": {}, "listeners": {}, "clusters": cl, "rpc": rpc, "filters": {}}


def main() -> None:
    print(f"refused above {MAX_STATS_BYTES // 1024} KiB")
    for used in (10, 100, 450, 1000):
        full = snapshot(1000, used)
        for name, doc in (("full", full), ("usedonly", used_only(full))):
            body = json.dumps(doc, indent=2, sort_keys=True).encode()
            rounds = 10
            t0 = time.perf_counter()
            for _ in range(rounds):
                sample_of(json.loads(body), 0.0)
            ms = (time.perf_counter() - t0) / rounds * 1000
            print(
                f"1000 clusters, {used:4} in use, /stats{'?usedonly' if name == 'usedonly' else '':10}"
                f"{len(body) // 1024:6} KiB  {ms:7.1f} ms"
            )


if __name__ == "__main__":
    main()
