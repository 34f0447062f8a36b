"""The HTTP/1.1 request path in one process, without sockets: Python CPU µs per proxied request.

usage: python benchmarks/http1_path.py [REQUESTS] [ROUNDS]

The listener, route and cluster of ``benchmarks/run.py``'s http group (one route with a timeout, no
filter, retry or mirror) are built from config as the proxy builds them; the downstream connection
and one kept-alive upstream connection get transports that only record what is written. Each
request is wrk's (``GET / HTTP/1.1`` with a Host) and each answer meshload's (two headers, a 13-byte
body); every request is given its own loop turn, as on a socket, and every answer is checked.

What it measures is the user CPU the proxy spends per request in Python and in the C it calls
(httptools, uvloop), less that of the two loop turns alone (measured before each round), with no
system calls: on a machine shared with other work it is
steadier than ``run.py``, whose figure adds the four socket calls of a proxied exchange. Run it with
another checkout's interpreter to compare two versions (``python -P``). Asserts nothing but the bytes.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
from typing import Any

from sofamesh.core.build import build_runtime, proxy_host
from sofamesh.core.config.loader import load_text
from sofamesh.core.net.loop import new_event_loop
from sofamesh.core.proxy.stream_manager import DownstreamConnection
from sofamesh.core.upstream.pool import ExclusiveConnection

CONFIG = """
listeners:
  - name: in
    address: 127.0.0.1:1
    protocols: [http1]
    routes: [{cluster: up, timeout_ms: 3000}]
clusters:
  - {name: up, protocol: http1, endpoints: ["127.0.0.1:2"]}
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # what wrk sends
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n"


class Recorder(asyncio.Transport):
    """A transport that keeps the count and the last of what was written."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.peer = peer
        self.writes = 0
        self.last = b""

    def write(self, data: Any) -> None:
        self.writes += 1
        self.last = bytes(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def user_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


async def turns(requests: int) -> float:
    """The same loop with no proxy work: two loop turns per request, subtracted from ``run``."""
    tick = asyncio.sleep
    t0 = user_s()
    for _ in range(requests):
        await tick(0)
        await tick(0)
    return (user_s() - t0) / requests * 1e6


async def run(requests: int) -> float:
    loop = asyncio.get_running_loop()
    rt = build_runtime(load_text(CONFIG), proxy_host(), loop)
    cluster = rt.clusters["up"]
    listener = rt.listeners["in"]
    pool = cluster.pool_for(cluster.endpoints[0], listener.factories[0])
    up = ExclusiveConnection(pool)
    ut = Recorder(("127.0.0.1", 2))
    up.connection_made(ut)  # connected and idle in its pool, as after the first request
    down = DownstreamConnection(listener, loop)
    dt = Recorder(("127.0.0.1", 40000))
    down.connection_made(dt)
    tick = asyncio.sleep
    for _ in range(200):  # warm-up
        down.data_received(REQUEST)
        await tick(0)
        up.data_received(RESPONSE)
        await tick(0)
    assert ut.last.startswith(b"GET / HTTP/1.1\r\n") and b"x-forwarded-for: 127.0.0.1" in ut.last, ut.last
    assert dt.last.startswith(b"HTTP/1.1 200 OK\r\n") and dt.last.endswith(b"\r\n\r\nhello, world\n"), dt.last
    before = dt.writes
    t0 = user_s()
    for _ in range(requests):
        down.data_received(REQUEST)
        await tick(0)
        up.data_received(RESPONSE)
        await tick(0)
    spent = user_s() - t0
    assert dt.writes - before == requests, (dt.writes - before, requests)
    return spent / requests * 1e6


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    loop = new_event_loop()
    try:
        figures = []
        for _ in range(rounds):
            base = loop.run_until_complete(turns(requests))
            figures.append(loop.run_until_complete(run(requests)) - base)
    finally:
        loop.close()
    print(f"{sys.executable}: {statistics.median(figures):.2f} µs user CPU per request, loop turns excluded "
          f"(median of {rounds}: {', '.join(f'{f:.2f}' for f in figures)})")


if __name__ == "__main__":
    main()
