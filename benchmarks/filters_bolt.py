"""Bolt through sofamesh with filters off and on (authz.rbac + quota.local + telemetry), side by side
in one run: req/s and the proxy's CPU µs per request; the difference is what the filters cost.

usage: python benchmarks/filters_bolt.py [SECONDS] [CONNECTIONS] [IN_FLIGHT_PER_CONNECTION]

Uses the load generator and the sofa-rpc-node provider of benchmarks/bolt_proxy.py. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

from sofamesh.testing import ProxyProcess, free_port, wait_port

_spec = importlib.util.spec_from_file_location("bolt_proxy", Path(__file__).with_name("bolt_proxy.py"))
assert _spec is not None and _spec.loader is not None
bolt_proxy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bolt_proxy)

FILTERS: list[dict[str, Any]] = [
    {"type": "authz.rbac", "config": {"policies": [
        {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["drop*"]}}]}]},
        {"action": "ALLOW", "rules": [{"to": [{"operation": {"services": ["com.example.EchoService:*"]}}]}]}]}},
    {"type": "quota.local", "config": {"key": ["service", "method"], "rate": 10_000_000, "burst": 10_000_000}},
    {"type": "telemetry", "config": {"workload": "echo"}},
]


def config(port: int, provider_port: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "listeners": [{"name": "rpc_in", "address": f"127.0.0.1:{port}", "protocols": ["bolt"], "filters": filters,
                       "routes": [{"match": {"service": "com.example.EchoService:1.0"}, "cluster": "echo"}]}],
        "clusters": [{"name": "echo", "protocol": "bolt", "endpoints": [f"127.0.0.1:{provider_port}"]}],
    }


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    in_flight = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    provider_port = free_port()
    peers = bolt_proxy.PEERS
    provider = subprocess.Popen(["node", "-r", str(peers / "loopback.js"), str(peers / "provider.js"),
                                 str(provider_port), "com.example.EchoService", "A"],
                                stdout=subprocess.DEVNULL, cwd=peers)
    try:
        wait_port("127.0.0.1", provider_port, 20)
        print(f"{seconds:.0f} s per run, {connections} connections x {in_flight} in flight")
        off_port, on_port = free_port(), free_port()
        with ProxyProcess(config(off_port, provider_port, [])) as off, \
                ProxyProcess(config(on_port, provider_port, FILTERS)) as on:
            assert off.proc is not None and on.proc is not None
            for label, port, proc in (("filters off", off_port, off.proc), ("filters on", on_port, on.proc),
                                      ("filters off", off_port, off.proc), ("filters on", on_port, on.proc)):
                bolt_proxy.run(label, ("127.0.0.1", port), seconds, connections, in_flight, proc.pid)
    finally:
        provider.terminate()
        provider.wait(10)


if __name__ == "__main__":
    main()
