"""The Bolt and Dubbo request path in one process, without sockets: Python CPU µs per proxied request.

usage: python benchmarks/rpc_path.py bolt|dubbo [REQUESTS] [ROUNDS]

The listener, route and cluster of ``benchmarks/run.py``'s bolt and dubbo groups (one route matching
the service, with a timeout; no filter, retry or mirror) are built from config as the proxy builds
them; the downstream connection and the multiplexed upstream connection get transports that only
record what is written. As in the 8x16 scenario, each downstream read holds 16 requests (the
captured sofa-rpc-node call for Bolt, the run's hessian2 ``echo`` for Dubbo; ids 1 to 16) and each
upstream read their 16 answers, under the ids the proxy gave them upstream; every read is given its
own loop turn, as on a socket, and the answers going back are checked by count and size.

What it measures is the user CPU the proxy spends per request in Python and in the C it calls
(uvloop), less that of the two loop turns alone (measured before each round), with no system
calls: on a machine shared with other work it is steadier than ``run.py``, whose figure adds the
socket calls. Run it with another checkout's interpreter to compare two versions (``python -P``).
Asserts nothing but the answers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http1_path import Recorder, turns, user_s

from sofamesh.core.build import build_runtime, proxy_host
from sofamesh.core.config.loader import load_text
from sofamesh.core.net.loop import new_event_loop
from sofamesh.core.proxy.stream_manager import DownstreamConnection
from sofamesh.core.upstream.pool import MultiplexedConnection, MultiplexedPool
from sofamesh.plugins.protocols.dubbo import frames as dubbo

REPO = Path(__file__).resolve().parents[1]
SERVICES = {"bolt": "com.example.EchoService:1.0", "dubbo": "com.sofamesh.demo.EchoService"}  # run.py's
IN_FLIGHT = 16
CONFIG = """
listeners:
  - name: in
    address: 127.0.0.1:1
    protocols: [{proto}]
    routes: [{{match: {{service: "{service}"}}, cluster: up, timeout_ms: 3000}}]
clusters:
  - {{name: up, protocol: {proto}, endpoints: ["127.0.0.1:2"]}}
"""


def frames(proto: str) -> tuple[bytes, bytes]:
    """(request, response) as ``benchmarks/run.py`` sends and answers them."""
    if proto == "bolt":
        spec = importlib.util.spec_from_file_location(
            "bolt_captured", REPO / "tests/unit/plugins/protocols/bolt/bolt_captured.py")
        assert spec is not None and spec.loader is not None
        captured = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(captured)
        return captured.NODE_V1_REQUEST, captured.NODE_V1_RESPONSE
    service = SERVICES["dubbo"]
    attachments = {"application": "bench", "interface": service, "path": service, "version": "1.0.0"}
    request = dubbo.encode_request(1, service, "echo", version="1.0.0", parameter_types="Ljava/lang/String;",
                                   args=dubbo.encode_string("hello dubbo"), attachments=attachments)
    return request, dubbo.encode_frame(0x02, 20, 1, b"\x91" + dubbo.encode_string("hello dubbo"))


async def run(proto: str, batches: int) -> float:
    loop = asyncio.get_running_loop()
    rt = build_runtime(load_text(CONFIG.format(proto=proto, service=SERVICES[proto])), proxy_host(), loop)
    cluster = rt.clusters["up"]
    listener = rt.listeners["in"]
    pool = cluster.pool_for(cluster.endpoints[0], listener.factories[0])
    assert isinstance(pool, MultiplexedPool)
    up = MultiplexedConnection(pool)
    ut = Recorder(("127.0.0.1", 2))
    up.connection_made(ut)  # connected: the pool's one connection, as after the first request
    pool.conn = up
    down = DownstreamConnection(listener, loop)
    dt = Recorder(("127.0.0.1", 40000))
    down.connection_made(dt)
    request, response = frames(proto)
    rewrite = up.codec.rewrite_request_id
    reads = b"".join(rewrite(request, i) for i in range(1, IN_FLIGHT + 1))
    answer_bytes = IN_FLIGHT * len(response)
    warm = 200
    # the upstream gives ids 1, 2, ... in order: every read of answers, made before the clock starts
    answers = [b"".join(rewrite(response, b * IN_FLIGHT + i) for i in range(1, IN_FLIGHT + 1))
               for b in range(warm + batches)]
    tick = asyncio.sleep
    for b in range(warm):
        down.data_received(reads)
        await tick(0)
        up.data_received(answers[b])
        await tick(0)
    assert len(dt.last) == answer_bytes and dt.last.startswith(rewrite(response, 1)), dt.last[:64]
    before = dt.writes
    t0 = user_s()
    for b in range(warm, warm + batches):
        down.data_received(reads)
        await tick(0)
        up.data_received(answers[b])
        await tick(0)
    spent = user_s() - t0
    assert dt.writes - before == batches and len(dt.last) == answer_bytes, (dt.writes - before, batches)
    assert listener.stats.downstream_rq_active == 0 and not up.inflight
    return spent / (batches * IN_FLIGHT) * 1e6


def main() -> None:
    proto = sys.argv[1] if len(sys.argv) > 1 else "bolt"
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 64_000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    batches = max(1, requests // IN_FLIGHT)
    loop = new_event_loop()
    try:
        figures = []
        for _ in range(rounds):
            base = loop.run_until_complete(turns(batches)) / IN_FLIGHT  # two loop turns per 16 requests
            figures.append(loop.run_until_complete(run(proto, batches)) - base)
    finally:
        loop.close()
    print(f"{sys.executable} {proto}: {statistics.median(figures):.2f} µs user CPU per request, loop turns "
          f"excluded (median of {rounds}: {', '.join(f'{f:.2f}' for f in figures)})")


if __name__ == "__main__":
    main()
