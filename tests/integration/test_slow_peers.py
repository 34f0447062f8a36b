"""Slow peers against a running ``sofamesh proxy``: slowloris heads, half-sent RPC frames, stalled
bodies, connections past their lifetime, and silent multiplexed connections pinged then closed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from sofamesh.core.codec import Codec, CodecLimits, Role
from sofamesh.core.events import NEED_DATA, Heartbeat
from sofamesh.plugins.protocols.bolt.codec import BoltCodec
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.conftest import http_proxy_config
from tests.unit.plugins.protocols.bolt.bolt_captured import NODE_V1_REQUEST
from tests.unit.plugins.protocols.dubbo.test_dubbo_codec import REQ_GREET

LORIS = 1000
HEADER_TIMEOUT_S = 2.0
# the sweep checks once a second; a loaded CI machine may add a few seconds more
CLOSE_MARGIN_S = 8.0


async def _loris(port: int, started: list[float], closed: list[float | None], i: int, gate: asyncio.Semaphore) -> None:
    """One slowloris: a request line at once, then one header line every 0.3 s, never the end."""
    loop = asyncio.get_running_loop()
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: loris\r\n")
    started[i] = t0 = loop.time()
    try:
        while loop.time() - t0 < HEADER_TIMEOUT_S + CLOSE_MARGIN_S + 2:
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.3)
            except TimeoutError:
                writer.write(b"X-Trickle: a\r\n")
                continue
            if not data:
                closed[i] = loop.time() - t0
                return
    except (ConnectionResetError, BrokenPipeError):
        closed[i] = loop.time() - t0
        return
    finally:
        writer.close()


async def _real_client(port: int, n: int) -> list[float]:
    """``n`` requests from a client that sends whole requests; the latency of each."""
    out = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for i in range(n):
            t0 = time.monotonic()
            r = await c.get(f"/real/{i}")
            assert r.status_code == 200 and r.text == f"up-a GET /real/{i}\n"
            out.append(time.monotonic() - t0)
            await asyncio.sleep(0.05)
    return out


def test_a_thousand_slowloris_connections_neither_starve_a_real_client_nor_outlive_the_header_timeout(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([upstream.address], request_headers_timeout_ms=int(HEADER_TIMEOUT_S * 1000))
    proxy = proxy_factory(cfg)

    async def run() -> tuple[list[float], list[float], list[float | None]]:
        started = [0.0] * LORIS
        closed: list[float | None] = [None] * LORIS
        gate = asyncio.Semaphore(200)  # connect in waves: the listen backlog is finite
        lorises = [asyncio.create_task(_loris(port, started, closed, i, gate)) for i in range(LORIS)]
        await asyncio.sleep(0.5)
        latencies = await _real_client(port, 20)
        await asyncio.wait_for(asyncio.gather(*lorises), HEADER_TIMEOUT_S + CLOSE_MARGIN_S + 30)
        return latencies, started, closed

    latencies, started, closed = asyncio.run(run())
    assert all(started), "every slowloris connected and began its head"
    assert max(latencies) < 5.0, f"the real client waited {max(latencies):.2f} s behind the slowloris connections"
    left_open = [i for i, c in enumerate(closed) if c is None]
    assert not left_open, f"{len(left_open)} slowloris connection(s) still open after the header timeout"
    times = sorted(c for c in closed if c is not None)
    # counted from the first byte, not restarted by each trickled header line
    assert times[0] >= HEADER_TIMEOUT_S - 0.2, f"one closed {times[0]:.2f} s after its first byte"
    assert times[-1] <= HEADER_TIMEOUT_S + CLOSE_MARGIN_S, f"one closed only {times[-1]:.2f} s after its first byte"
    st = proxy.stats()["listeners"]["web"]
    assert st["downstream_rq_header_timeout"] == LORIS
    assert st["downstream_rq_2xx"] == 20
    assert st["downstream_cx_active"] <= 1


def _rpc_config(port: int, **listener: object) -> dict[str, object]:
    return {
        "listeners": [
            {
                "name": "rpc",
                "address": f"127.0.0.1:{port}",
                "protocols": ["bolt", "dubbo"],
                "routes": [{"name": "all", "cluster": "nowhere"}],
                **listener,
            }
        ],
        "clusters": [{"name": "nowhere", "endpoints": [f"127.0.0.1:{free_port()}"], "health": {"ejection_ms": 0}}],
    }


def _closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the peer closed ``sock`` (reading and dropping what it sends), None if not within ``limit``."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            if not sock.recv(65536):
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0
    return None


def test_a_bolt_or_dubbo_frame_that_started_must_end_within_the_header_timeout(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    port = free_port()
    proxy = proxy_factory(_rpc_config(port, request_headers_timeout_ms=1000))
    socks = []
    for frame in (NODE_V1_REQUEST, REQ_GREET):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(frame[:20])
        socks.append((s, frame))
    time.sleep(0.5)
    for s, frame in socks:
        s.sendall(frame[20:24])  # a trickle does not restart the clock
    for s, _ in socks:
        waited = _closed_after(s, 1.0 + CLOSE_MARGIN_S)
        s.close()
        assert waited is not None, "a half-sent frame kept its connection open"
    assert proxy.stats()["listeners"]["rpc"]["downstream_rq_header_timeout"] == 2


def test_a_request_body_that_stops_arriving_is_answered_408(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([upstream.address], body_idle_timeout_ms=1000)
    proxy = proxy_factory(cfg)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        s.settimeout(1.0 + CLOSE_MARGIN_S)
        t0 = time.monotonic()
        got = b""
        while not got.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        waited = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert waited >= 0.8
    assert proxy.stats()["listeners"]["web"]["downstream_rq_body_timeout"] == 1


def test_a_connection_past_max_connection_duration_is_closed_and_the_client_reconnects(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([upstream.address], max_connection_duration_ms=1000)
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        assert c.get("/a").status_code == 200
        deadline = time.monotonic() + 1.0 + CLOSE_MARGIN_S
        while time.monotonic() < deadline:
            if proxy.stats()["listeners"]["web"]["downstream_cx_max_duration_reached"]:
                break
            time.sleep(0.2)
        assert c.get("/b").status_code == 200
    st = proxy.stats()["listeners"]["web"]
    assert st["downstream_cx_max_duration_reached"] >= 1
    assert st["downstream_cx_total"] == 2


_RPC: dict[str, tuple[Callable[[], Codec], bytes]] = {
    "bolt": (lambda: BoltCodec(Role.CLIENT, CodecLimits()), NODE_V1_REQUEST),
    "dubbo": (lambda: DubboCodec(Role.CLIENT, CodecLimits()), REQ_GREET),
}


def _heartbeat(sock: socket.socket, codec: Codec, limit: float) -> Heartbeat | None:
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return None
        codec.receive_data(data)
        while (ev := codec.next_event()) is not NEED_DATA:
            if type(ev) is Heartbeat and not ev.reply:
                return ev
    return None


@pytest.mark.parametrize("protocol", sorted(_RPC))
def test_a_silent_rpc_connection_is_pinged_and_closed_when_the_ping_goes_unanswered(
    protocol: str, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    make, request = _RPC[protocol]
    port = free_port()
    proxy = proxy_factory(_rpc_config(port, connection_keepalive={"interval_ms": 1000, "timeout_ms": 1500}))
    silent = socket.create_connection(("127.0.0.1", port), timeout=5)
    answering = socket.create_connection(("127.0.0.1", port), timeout=5)
    for s in (silent, answering):
        s.sendall(request)  # answered by the proxy itself: no upstream is listening
    for _ in range(2):  # the answering peer replies to two pings and stays connected
        beat = _heartbeat(answering, make(), 1.0 + CLOSE_MARGIN_S)
        assert beat is not None, "no ping on an idle connection"
        answering.sendall(make().heartbeat_reply(beat))
    waited = _closed_after(silent, 2.5 + CLOSE_MARGIN_S)
    assert waited is not None, "a connection that never answered its ping stayed open"
    answering.settimeout(0.5)
    try:
        still = answering.recv(65536) != b""
    except TimeoutError:
        still = True
    assert still, "the connection that answered its pings was closed"
    silent.close()
    answering.close()
    st = proxy.stats()["listeners"]["rpc"]
    assert st["downstream_cx_keepalive_timeout"] == 1


def _h2_pinged(sock: socket.socket, conn: h2.connection.H2Connection, limit: float, answer: bool) -> bool:
    """Read until the proxy sends a PING (answered when ``answer``); False if none came."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return False
        events = conn.receive_data(data)
        out = conn.data_to_send()  # SETTINGS ACKs, and the PING ACK h2 queues itself
        if any(isinstance(e, h2.events.PingReceived) for e in events):
            if answer:
                sock.sendall(out)
            return True
        sock.sendall(out)
    return False


def test_an_idle_http2_connection_is_pinged_and_closed_only_when_it_does_not_answer(
    upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]
) -> None:
    cfg, port = http_proxy_config([upstream.address], connection_keepalive={"interval_ms": 1000, "timeout_ms": 1500})
    cfg["listeners"][0]["protocols"] = ["http2"]
    proxy = proxy_factory(cfg)
    peers = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        s.sendall(c.data_to_send())
        peers.append((s, c))
    (answering, ac), (silent, sc) = peers
    for _ in range(2):
        assert _h2_pinged(answering, ac, 1.0 + CLOSE_MARGIN_S, answer=True), "no PING on an idle connection"
    assert _h2_pinged(silent, sc, 1.0 + CLOSE_MARGIN_S, answer=False)
    assert _closed_after(silent, 1.5 + CLOSE_MARGIN_S) is not None, "a connection that never answered stayed open"
    answering.settimeout(0.3)
    try:
        still = answering.recv(65536) != b""
    except TimeoutError:
        still = True
    assert still, "the connection that answered its pings was closed"
    for s, _ in peers:
        s.close()
    assert proxy.stats()["listeners"]["web"]["downstream_cx_keepalive_timeout"] == 1


def test_a_plain_http2_stream_silent_after_its_response_started_is_reset_alone(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    """Envoy's stream_idle_timeout on plain HTTP/2, the h2 library as the client: a response whose
    upstream stops after its headers and first bytes ends with RST_STREAM on that stream alone
    about 2 s after its last event, while GETs on the same connection are answered all along and
    after; the connection is neither closed nor sent GOAWAY."""
    up_port = free_port()
    cfg, port = http_proxy_config([f"127.0.0.1:{up_port}"], timeout_ms=0, stream_idle_timeout_ms=2000)
    cfg["listeners"][0]["protocols"] = ["http2"]
    cfg["clusters"][0]["http_protocol"] = "http1"
    proxy = proxy_factory(cfg)

    async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                if head.split(b" ", 2)[1] == b"/stall":  # headers and 5 bytes, then silence
                    w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                    await r.read()  # until the proxy gives up on it
                    return
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            w.close()

    async def scenario() -> dict[str, object]:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(upstream, "127.0.0.1", up_port)
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        body: dict[int, bytes] = {}
        ended: dict[int, asyncio.Event] = {}
        reset: dict[int, tuple[float, int]] = {}
        moved: dict[int, float] = {}
        goaway: list[object] = []

        async def read() -> None:
            while data := await reader.read(65536):
                for ev in conn.receive_data(data):
                    sid = getattr(ev, "stream_id", 0)
                    if isinstance(ev, (h2.events.ResponseReceived, h2.events.DataReceived)):
                        moved[sid] = loop.time()
                    if isinstance(ev, h2.events.DataReceived):
                        body[sid] = body.get(sid, b"") + ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended[sid].set()
                    elif isinstance(ev, h2.events.StreamReset):
                        reset[sid] = (loop.time(), ev.error_code)
                        ended[sid].set()
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        goaway.append(ev)
                writer.write(conn.data_to_send())

        def get(path: str) -> int:
            sid = conn.get_next_available_stream_id()
            ended[sid] = asyncio.Event()
            conn.send_headers(
                sid, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "web")], end_stream=True
            )
            writer.write(conn.data_to_send())
            return sid

        reading = loop.create_task(read())
        try:
            stalled = get("/stall")
            for _ in range(100):
                if body.get(stalled) == b"first":
                    break
                await asyncio.sleep(0.05)
            answered = 0
            while not ended[stalled].is_set() and loop.time() - moved.get(stalled, loop.time()) < 12:
                sid = get("/ok")
                await asyncio.wait_for(ended[sid].wait(), 10)
                assert body.get(sid) == b"ok" and sid not in reset, (sid, body, reset)
                answered += 1
                await asyncio.sleep(0.2)
            after = get("/ok")
            await asyncio.wait_for(ended[after].wait(), 10)
            return {
                "first": body.get(stalled),
                "reset": reset.get(stalled),
                "last": moved.get(stalled),
                "answered": answered,
                "after": body.get(after),
                "goaway": goaway,
            }
        finally:
            reading.cancel()
            writer.close()
            server.close()

    r = asyncio.run(scenario())
    assert r["first"] == b"first", r
    assert r["reset"] is not None, f"the silent stream was never reset: {r}"
    at, _code = r["reset"]  # type: ignore[misc]
    assert 1.9 <= at - r["last"] < 8, r  # type: ignore[operator]  # the idle timeout + up to one 1 s sweep
    assert r["answered"] >= 5 and r["after"] == b"ok" and r["goaway"] == [], r
    st = proxy.stats()["listeners"]["web"]
    assert st["downstream_rq_idle_timeout"] == 1, st
    assert st["downstream_cx_total"] == 1, st
