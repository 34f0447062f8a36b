"""The gRPC unary path in one process, without sockets: µs per proxied call.

usage: python benchmarks/grpc_path.py [CALLS] [ROUNDS] [BATCH]

The listener, route and cluster of ``benchmarks/run.py``'s grpc group (an ``http2`` listener, one
route on the gRPC service with a timeout, an ``http2`` cluster; no filter, retry or mirror) are
built from config as the proxy builds them; the downstream connection and one upstream connection
get transports that only record what is written. Each call is what h2load sends in that group
(HEADERS with h2load's fields, then one DATA with END_STREAM carrying a 5-byte gRPC message) and
each answer what a gRPC server sends (HEADERS, one DATA, trailers with ``grpc-status: 0``), both
HPACK-coded as a peer does once its dynamic table holds the fields (the first call of a connection
inserts them). The collector runs as in a started proxy (``gc_policy``). BATCH calls (default 1) arrive in one read and their answers in one read, then the
loop takes a turn, as on a socket; the last answer's bytes are checked.

What it measures is the time the proxy takes per call in Python and in the C it calls, with no
system calls, less that of the loop turns alone (measured before each round): calls are timed 32
at a time and each round keeps the tenth percentile of those chunks, which leaves out most of what
other work on a shared machine (another process, a stolen virtual CPU) adds to a chunk. Run it with
another checkout's interpreter to compare two versions (``python -P``), several times each.
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import sys
import time
from pathlib import Path

from sofamesh.core.build import build_runtime, proxy_host
from sofamesh.core.config.loader import load_text
from sofamesh.core.gc_policy import settle_after_start
from sofamesh.core.net.loop import new_event_loop
from sofamesh.core.proxy.stream_manager import DownstreamConnection
from sofamesh.plugins.protocols.http2.frames import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    PREFACE,
    SETTINGS_ACK,
    frame_header,
    settings_frame,
    window_update_frame,
)
from sofamesh.plugins.protocols.http2.hpack_codec import Encoder

CONFIG = """
listeners:
  - name: in
    address: 127.0.0.1:1
    protocols: [http2]
    routes: [{match: {service: sofamesh.test.Echo}, cluster: up, timeout_ms: 3000}]
clusters:
  - {name: up, protocol: http2, endpoints: ["127.0.0.1:2"]}
"""
MESSAGE = b"\x00\x00\x00\x00\x05hello"  # run.py's GRPC_BODY
REQUEST = [  # h2load -H 'content-type: application/grpc' -H 'te: trailers' -d FILE, as it sends them
    (b":method", b"POST"),
    (b":path", b"/sofamesh.test.Echo/Unary"),
    (b":scheme", b"http"),
    (b":authority", b"127.0.0.1:1"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"content-length", b"10"),
]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc"),
            (b"grpc-accept-encoding", b"identity,deflate,gzip")]  # fmt: skip
TRAILERS = [(b"grpc-status", b"0")]
BIG_WINDOW = 2**30 - 1  # h2load's and grpcio's windows are large: no WINDOW_UPDATE on the path


def _recorder() -> type[asyncio.Transport]:
    """http1_path's recording transport (loaded by path: ``python -P`` puts no script folder on sys.path)."""
    spec = importlib.util.spec_from_file_location("http1_path", Path(__file__).resolve().parent / "http1_path.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Recorder  # type: ignore[no-any-return]


Recorder = _recorder()


def hello() -> bytes:
    """A peer's SETTINGS (large stream windows), its connection WINDOW_UPDATE and the ACK of ours."""
    return (
        settings_frame([(INITIAL_WINDOW_SIZE, BIG_WINDOW)]) + window_update_frame(0, BIG_WINDOW - 65_535) + SETTINGS_ACK
    )


def calls(n: int, first_sid: int) -> tuple[list[bytes], list[bytes]]:
    """The bytes of ``n`` calls from the client (streams 1, 3, ...) and of the ``n`` answers from the
    server on the proxy's upstream streams (``first_sid``, ...), each side with its own HPACK context."""
    client, server = Encoder(), Encoder()
    requests, answers = [], []
    for i in range(n):
        block = client.encode(REQUEST)
        sid = 2 * i + 1
        requests.append(
            frame_header(len(block), HEADERS, END_HEADERS, sid)
            + block
            + frame_header(len(MESSAGE), DATA, END_STREAM, sid)
            + MESSAGE
        )
        head, trailers = server.encode(RESPONSE), server.encode(TRAILERS)
        up = first_sid + 2 * i
        answers.append(
            frame_header(len(head), HEADERS, END_HEADERS, up)
            + head
            + frame_header(len(MESSAGE), DATA, 0, up)
            + MESSAGE
            + frame_header(len(trailers), HEADERS, END_HEADERS | END_STREAM, up)
            + trailers
        )
    return requests, answers


CHUNK = 32  # calls timed together (a few ms at most: within one scheduler slice)


def low(times: list[float]) -> float:
    return sorted(times)[len(times) // 10]


async def turns(n: int, batch: int) -> float:
    """The same loop with no proxy work: two loop turns per batch, subtracted from ``run``."""
    tick = asyncio.sleep
    clock = time.perf_counter
    per = max(1, CHUNK // batch)
    times = []
    for _ in range(max(1, n // (per * batch))):
        t0 = clock()
        for _ in range(per):
            await tick(0)
            await tick(0)
        times.append((clock() - t0) / (per * batch))
    return low(times) * 1e6


async def run(n: int, batch: int) -> float:
    warm = batch * -(-400 // batch)  # calls before the measured ones, whole batches
    loop = asyncio.get_running_loop()
    rt = build_runtime(load_text(CONFIG), proxy_host(), loop)
    cluster = rt.clusters["up"]
    listener = rt.listeners["in"]
    pool = cluster.pool_for(cluster.endpoints[0], cluster.protocol or listener.factories[0])
    up = pool.conn_class(pool)  # type: ignore[attr-defined]
    pool.conn = up  # type: ignore[attr-defined]
    ut = Recorder(("127.0.0.1", 2))
    up.connection_made(ut)  # connected, its preface and SETTINGS written
    up.data_received(hello())
    down = DownstreamConnection(listener, loop)
    dt = Recorder(("127.0.0.1", 40000))
    down.connection_made(dt)
    down.data_received(PREFACE + hello())
    tick = asyncio.sleep
    clock = time.perf_counter
    requests, answers = calls(warm + n, up.codec.new_stream_id())
    settle_after_start()  # the collector's policy of a started proxy
    per = max(1, CHUNK // batch) * batch
    times = []
    t0, before = 0.0, 0
    for at in range(0, warm + n, batch):
        if at >= warm and (at - warm) % per == 0:
            if at > warm:
                times.append((clock() - t0) / per)
            else:
                before = dt.writes
            t0 = clock()
        down.data_received(b"".join(requests[at : at + batch]))
        await tick(0)
        up.data_received(b"".join(answers[at : at + batch]))
        await tick(0)
    assert dt.writes - before == n // batch, (dt.writes - before, n // batch)
    # the last answer went downstream whole: its trailers end the client's stream
    tail = frame_header(1, HEADERS, END_HEADERS | END_STREAM, 2 * (warm + n) - 1)
    assert dt.last[-10:-1] == tail, dt.last
    assert not down.streams and not up.inflight, (down.streams, up.inflight)
    return low(times) * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    n -= n % batch
    loop = new_event_loop()
    try:
        figures = []
        for _ in range(rounds):
            base = loop.run_until_complete(turns(n, batch))
            figures.append(loop.run_until_complete(run(n, batch)) - base)
    finally:
        loop.close()
    print(
        f"{sys.executable}: {min(figures):.2f} µs per call at best, {statistics.median(figures):.2f} median, "
        f"loop turns excluded (batch {batch}, {rounds} rounds: {', '.join(f'{f:.2f}' for f in figures)})"
    )


if __name__ == "__main__":
    main()
