"""``sofamesh demo``: sample HTTP services, a sidecar in front of them, calls through it, a table.

Everything runs in this process on 127.0.0.1 with free ports; nothing outside is needed.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from sofamesh.core.admin import HttpMini
from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.config.loader import from_mapping
from sofamesh.core.events import NEED_DATA, BodyChunk, EndOfMessage, RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.core.net import loop as loop_mod
from sofamesh.core.server import Server
from sofamesh.plugins.protocols.http1.codec import Http1CodecFactory
from sofamesh.testing import free_port


async def _service(name: str, delay: float = 0.0) -> HttpMini:
    async def handle(path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        if delay:
            await asyncio.sleep(delay)
        return 200, "text/plain", f"{name}\n".encode()

    srv = HttpMini(f"127.0.0.1:{free_port()}", handle)
    await srv.start()
    return srv


class _Client:
    """A keep-alive HTTP/1.1 client on the project's own codec."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.codec = Http1CodecFactory().new_codec(Role.CLIENT, CodecLimits())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None or not self.codec.keep_alive:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.codec = Http1CodecFactory().new_codec(Role.CLIENT, CodecLimits())
        assert self.reader is not None
        head = RequestHead(protocol="http1", service="demo", method="GET", path=path,
                           headers=Headers([("host", "demo")]))
        self.writer.write(self.codec.send(head))
        status, body = 0, b""
        while True:
            ev = self.codec.next_event()
            if ev is NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), 5)
                self.codec.receive_data(data)
                if not data and status:
                    return status, body
                if not data:
                    raise ConnectionError("proxy closed the connection")
                continue
            if isinstance(ev, ResponseHead):
                status = ev.status
                if ev.end_stream:
                    return status, body
            elif isinstance(ev, BodyChunk):
                body += ev.data
            elif isinstance(ev, EndOfMessage):
                return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _demo(verbose: bool) -> int:
    a, b, slow = await _service("hello-a"), await _service("hello-b"), await _service("slow", delay=0.5)
    dead = free_port()
    listen = free_port()
    config = from_mapping({
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "listeners": [{
            "name": "sidecar", "address": f"127.0.0.1:{listen}", "protocols": "auto",
            "routes": [
                {"name": "hello", "match": {"path": {"prefix": "/hello"}}, "cluster": "hello"},
                {"name": "slow", "match": {"path": {"prefix": "/slow"}}, "cluster": "slow", "timeout_ms": 200},
                {"name": "gone", "match": {"path": {"prefix": "/gone"}}, "cluster": "gone"},
            ],
        }],
        "clusters": [
            {"name": "hello", "lb": "round_robin", "endpoints": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]},
            {"name": "slow", "endpoints": [f"127.0.0.1:{slow.port}"]},
            {"name": "gone", "endpoints": [f"127.0.0.1:{dead}"]},
        ],
    })
    server = Server(config)
    await server.start()
    plan = [("/hello", 40), ("/slow", 3), ("/gone", 3), ("/nowhere", 3)]
    rows: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    client = _Client(listen)
    t0 = time.perf_counter()
    for path, n in plan:
        for _ in range(n):
            start = time.perf_counter()
            status, body = await client.get(path)
            ms = (time.perf_counter() - start) * 1000
            upstream = body.decode().strip() if status == 200 else body.decode().strip()[:44]
            rows[(path, upstream, status)].append(ms)
    client.close()
    elapsed = time.perf_counter() - t0
    stats = server.listeners["sidecar"].rt.stats
    print(f"sofamesh demo: {sum(len(v) for v in rows.values())} HTTP/1.1 calls through a sidecar "
          f"on 127.0.0.1:{listen} in {elapsed:.2f} s\n")
    hdr = f"{'route':<10} {'upstream / reply':<46} {'status':>6} {'count':>6} {'p50 ms':>8}"
    print(hdr)
    print("-" * len(hdr))
    for (path, upstream, status), lat in sorted(rows.items()):
        print(f"{path:<10} {upstream:<46} {status:>6} {len(lat):>6} {statistics.median(lat):>8.2f}")
    served = Counter(up for (p, up, s), v in rows.items() for _ in v if p == "/hello")
    balanced = served.get("hello-a", 0) == served.get("hello-b", 0) == 20
    expected = {("/slow", 504), ("/gone", 503), ("/nowhere", 404)}
    got = {(p, s) for (p, _, s) in rows if p != "/hello"}
    ok = balanced and got == expected and stats.downstream_rq_total == sum(n for _, n in plan)
    print(f"\nproxy counters: requests={stats.downstream_rq_total} 2xx={stats.downstream_rq_2xx} "
          f"4xx={stats.downstream_rq_4xx} 5xx={stats.downstream_rq_5xx} timeouts={stats.downstream_rq_timeout}")
    print("verdict: " + ("OK: round robin split 20/20, timeout -> 504, dead upstream -> 503, no route -> 404"
                         if ok else f"UNEXPECTED: served={dict(served)} statuses={sorted(got)}"))
    await server.shutdown()
    for s in (a, b, slow):
        await s.stop()
    return 0 if ok else 1


def run_demo(verbose: bool = False) -> int:
    try:
        return loop_mod.run(_demo(verbose))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__: list[Any] = ["run_demo"]
