"""Memory of a sidecar: idle RSS with a typical config, and the cost of 10 000 idle connections.

usage: python benchmarks/memory.py [--compare LABEL=PYTHON]... [--connections N] [--rounds N]

The typical sidecar config (``typical_config``): an egress listener that sniffs HTTP/1.1 and HTTP/2
with a few routes, inbound HTTP, gRPC, Bolt and Dubbo listeners each with the inbound filter chain
of ``benchmarks/run.py`` (RBAC, local quota, Istio metrics), retries on the routes, outlier
detection and circuit breakers on the clusters, an admin port. Nothing needs to answer upstream:
the figures are for a proxy at rest.

For each interpreter (this checkout's, and each ``--compare``, e.g. the compiled build's), each
round starts a fresh proxy, waits 3 s, reads its RSS (VmRSS of the process), then opens N idle
TCP connections to the egress listener (``meshload idle``, pinned to the other core) and reads the
RSS again while they are open; then the same against the inbound HTTP/1.1 listener of a second
fresh proxy (it builds its codec on accept, where the egress listener waits for bytes to sniff).
Reported: medians over rounds of the idle RSS (and of its private part: the pages no other process
maps) and of the RSS added per connection, against the goals (<= 40 MB, <= 4 KB per connection).

The proxies run from bytecode, as an installed sidecar does (pip writes the ``.pyc`` files when it
installs a package): an unmeasured start of each interpreter first writes the bytecode of every
module it imports to a cache of this run (``-X pycache_prefix``), whatever ``PYTHONDONTWRITEBYTECODE``
says. A process that compiles its modules from source holds more (1.2 to 1.4 MB pure, 0.6 MB
compiled, on the typical config); ``--from-source`` measures that case.
Every process it starts is stopped by pid; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench

IDLE_RSS_GOAL_MB = 40.0
PER_CONNECTION_GOAL_KB = 4.0
PYCACHE = bench.PYCACHE  # the bytecode of the proxies started by this run
FROM_SOURCE = False  # --from-source: compile every module at each start


def typical_config(egress: int) -> dict[str, Any]:
    ports = {name: bench.free_port() for name in ("http", "grpc", "bolt", "dubbo")}
    listeners: list[dict[str, Any]] = [{
        "name": "egress", "address": f"127.0.0.1:{egress}", "protocols": ["http1", "http2"],
        "routes": [
            {"name": "reviews-v2", "match": {"path": {"prefix": "/reviews"}, "headers": {"end-user": "jason"}},
             "cluster": "http", "timeout_ms": 3000, "retry_policy": {"retry_on": ["5xx"], "num_retries": 2}},
            {"name": "grpc", "match": {"service": bench.GRPC_SERVICE}, "cluster": "grpc", "timeout_ms": 3000},
            {"name": "default", "cluster": "http", "timeout_ms": 3000},
        ],
    }]
    clusters: list[dict[str, Any]] = []
    for proto, name in (("http1", "http"), ("http2", "grpc"), ("bolt", "bolt"), ("dubbo", "dubbo")):
        inbound = bench.sofamesh_config(proto, ports[name], bench.free_port(), filters=True, resilient=True)
        listener, cluster = inbound["listeners"][0], inbound["clusters"][0]
        listener["name"], cluster["name"] = f"inbound_{name}", name
        for route in listener["routes"]:
            route["cluster"] = name
        listeners.append(listener)
        clusters.append(cluster)
    return {"admin": {"address": f"127.0.0.1:{bench.free_port()}"}, "listeners": listeners, "clusters": clusters}


def private_mb(pid: int) -> float:
    """The process's own pages (Private_Clean + Private_Dirty of smaps_rollup, its USS), in MB: RSS
    without the library pages other processes map too."""
    kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kb += int(line.split()[1])
    return kb / 1024


def start(python: str, label: str) -> tuple[bench.Target, dict[str, Any]]:
    import yaml

    egress = bench.free_port()
    config = typical_config(egress)
    cfg = bench.TMP / f"memory-{label}-{egress}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    # from source: an empty bytecode cache that nothing writes to
    flags = ["-B", "-X", f"pycache_prefix={PYCACHE}-none"] if FROM_SOURCE else ["-X", f"pycache_prefix={PYCACHE}"]
    proc = bench.spawn(bench.PROXY_CPU, [python, *flags, "-P", "-m", "sofamesh", "proxy", "-c", str(cfg)],
                       f"memory-{label}")
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            bench.stop(proc)
            raise RuntimeError(f"{label}: the proxy did not start: "
                               f"{(bench.TMP / f'memory-{label}.log').read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen("http://" + config["admin"]["address"] + "/ready", timeout=0.5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    bench.wait_port(egress)
    return bench.Target(label, egress, proc, config["admin"]["address"]), config


def held(python: str, label: str, connections: int, listener: str) -> dict[str, float]:
    """A fresh proxy's RSS at rest, then with ``connections`` idle connections to ``listener``."""
    target, config = start(python, label)
    try:
        time.sleep(3.0)  # start-up settles (the proxy gives free heap back once serving)
        assert target.pid is not None
        out: dict[str, float] = {"idle_rss_mb": bench.rss_mb(target.pid), "idle_private_mb": private_mb(target.pid),
                                 "listeners": len(config["listeners"])}
        if connections:
            address = next(lst["address"] for lst in config["listeners"] if lst["name"] == listener)
            out |= bench.idle_connections(bench.Target(label, int(address.rsplit(":", 1)[1]), target.proc),
                                          connections)
        return out
    finally:
        bench.stop(target.proc)


def one_round(python: str, label: str, connections: int) -> dict[str, float]:
    """Idle RSS, then idle connections to the sniffing egress listener; a second proxy for the
    inbound HTTP/1.1 listener (which builds its codec on accept), so neither reuses the other's heap."""
    out = held(python, label, connections, "egress")
    if connections:
        out["http1_kb_per_connection"] = held(python, label, connections, "inbound_http")["kb_per_connection"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=PYTHON",
                    help="also measure sofamesh run by this interpreter, e.g. compiled=.cache/venv-mypyc/bin/python")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-setup", action="store_true", help="skip benchmarks/setup.sh (meshload)")
    ap.add_argument("--out", type=Path, default=bench.CACHE / "bench" / "memory.json")
    ap.add_argument("--from-source", action="store_true",
                    help="no bytecode: every start compiles the modules it imports (as a checkout run with "
                         "PYTHONDONTWRITEBYTECODE=1 does)")
    args = ap.parse_args()
    global FROM_SOURCE
    FROM_SOURCE = args.from_source
    if not FROM_SOURCE:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the warm-up start writes the bytecode
    interpreters = [("pure", sys.executable)]
    for c in args.compare:
        label, _, python = c.partition("=")
        if not label or not python:
            raise SystemExit(f"--compare {c!r}: expected LABEL=PYTHON")
        interpreters.append((label, python))
    if not args.no_setup:
        subprocess.run(["bash", str(bench.REPO / "benchmarks/setup.sh")], check=True)
    bench.raise_fd_limit(args.connections * 3)
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _ in interpreters}
    try:
        if not FROM_SOURCE:
            for label, python in interpreters:  # unmeasured: writes the bytecode the measured starts read
                bench.stop(start(python, f"{label}-warm-up")[0].proc)
        for r in range(args.rounds):
            order = interpreters[r % len(interpreters):] + interpreters[:r % len(interpreters)]
            for label, python in order:
                s = one_round(python, label, args.connections)
                samples[label].append(s)
                print(f"  round {r + 1} {label}: {json.dumps(s)}", flush=True)
    finally:
        bench.stop_all()
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": bench.machine(), "connections": args.connections,
                               "bytecode": not FROM_SOURCE, "samples": samples}
    print("\nmodules " + ("compiled from source at each start" if FROM_SOURCE else "loaded from bytecode"))
    print(f"\n| build | idle RSS MB (goal <= {IDLE_RSS_GOAL_MB:.0f}) | of which private MB "
          f"| KB per idle connection, sniffing egress "
          f"(goal <= {PER_CONNECTION_GOAL_KB:.0f}) | KB per idle connection, HTTP/1.1 inbound "
          f"| RSS with {args.connections} idle egress connections MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, ss in samples.items():
        idle = statistics.median(s["idle_rss_mb"] for s in ss)
        private = statistics.median(s["idle_private_mb"] for s in ss)
        row = {"idle_rss_mb": idle, "idle_private_mb": private, "idle_rss_met": idle <= IDLE_RSS_GOAL_MB}
        if args.connections:
            per = statistics.median(s["kb_per_connection"] for s in ss)
            http1 = statistics.median(s["http1_kb_per_connection"] for s in ss)
            opened = min(int(s["connections"]) for s in ss)
            row |= {"kb_per_connection": per, "http1_kb_per_connection": http1,
                    "kb_per_connection_met": max(per, http1) <= PER_CONNECTION_GOAL_KB,
                    "rss_with_idle_mb": statistics.median(s["rss_with_idle_mb"] for s in ss), "opened_min": opened}
            print(f"| {label} | {idle:.1f} | {private:.1f} | {per:.2f} | {http1:.2f} | {row['rss_with_idle_mb']:.1f} "
                  f"({opened} opened) |")
        else:
            print(f"| {label} | {idle:.1f} | {private:.1f} | - | - | - |")
        results[label] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
