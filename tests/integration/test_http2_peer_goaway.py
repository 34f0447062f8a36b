"""GOAWAY from the peer, on both sides of the sidecar (RFC 9113 6.8).

Upstream: a grpcio server stopped with grace (it sends GOAWAY and finishes its calls) loses no call
in flight, and the next call opens a new connection; an upstream (the ``h2`` library as a
third-party server) that sends GOAWAY naming a last stream id below some streams in flight still
answers the streams at or below it on that connection, and the streams above it are sent again on a
fresh connection by the route's ``refused-stream`` retry policy (Istio's default), as in Envoy.

Downstream: a client that sends GOAWAY still gets its stream's response and its later PING's ACK,
and the sidecar closes the connection once that stream ended.
"""

from __future__ import annotations

import concurrent.futures
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import h2.config
import h2.connection
import h2.events
import hpack
import httpx
import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.integration.accepting import AcceptingServer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# -- a grpcio server stopped with grace -------------------------------------------------------------
class _SlowEcho:
    def __init__(self) -> None:
        self.started = 0
        self.lock = threading.Lock()

    def call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.started += 1
        time.sleep(1.0)
        return b"echo:" + request


def _grpc_server(port: int, echo: _SlowEcho) -> grpc.Server:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(
        "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(echo.call)}
    )
    server.add_generic_rpc_handlers((handler,))
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    return server


def test_calls_in_flight_finish_when_a_grpcio_upstream_stops_with_grace_and_the_next_opens_a_new_connection(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    up_port, port = free_port(), free_port()
    echo = _SlowEcho()
    server = _grpc_server(up_port, echo)
    proxy = proxy_factory(
        {
            "listeners": [
                {
                    "name": "grpc",
                    "address": f"127.0.0.1:{port}",
                    "protocols": ["http2"],
                    "routes": [{"cluster": "slow", "timeout_ms": 20000}],
                }
            ],
            "clusters": [{"name": "slow", "protocol": "http2", "endpoints": [f"127.0.0.1:{up_port}"]}],
        }
    )
    second: grpc.Server | None = None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/test.Slow/Call")
        try:
            futures = [call.future(f"m{i}".encode(), timeout=20) for i in range(8)]
            deadline = time.monotonic() + 10
            while echo.started < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert echo.started == 8, f"only {echo.started} of 8 calls reached the upstream"
            stopped = server.stop(grace=10)  # GOAWAY, then the calls in flight finish
            assert sorted(f.result(timeout=20) for f in futures) == sorted(f"echo:m{i}".encode() for i in range(8))
            assert stopped.wait(15)
            second = _grpc_server(up_port, _SlowEcho())
            assert call(b"after", timeout=20) == b"echo:after"
        finally:
            server.stop(0)
            if second is not None:
                second.stop(0)
    st = proxy.stats()
    assert st["clusters"]["slow"]["upstream_cx_total"] == 2
    assert st["listeners"]["grpc"]["downstream_rq_total"] == 9


# -- an h2 upstream whose GOAWAY refuses some streams -----------------------------------------------
class _RefusingUpstream(AcceptingServer):
    """An HTTP/2 server (the ``h2`` library's state machine) on a thread. On its first connection it
    waits for ``first`` requests, then sends GOAWAY(NO_ERROR, last stream id = the lowest), and
    half a second later answers that lowest stream only, and keeps reading until the client closes.
    Later connections answer every request at once. Bodies say ``conn <n> stream <id>``."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first = first
        self.first_closed_by_client = threading.Event()
        self.served: list[tuple[int, int]] = []

    def _respond(self, h2c: h2.connection.H2Connection, n: int, sid: int) -> None:
        body = f"conn {n} stream {sid}".encode()
        h2c.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
        h2c.send_data(sid, body, end_stream=True)
        self.served.append((n, sid))

    def serve(self, conn: socket.socket, n: int) -> None:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        conn.settimeout(15)
        ended: list[int] = []
        refusing = n == 1
        try:
            conn.sendall(h2c.data_to_send())
            while True:
                data = conn.recv(65536)
                if not data:
                    if refusing:
                        self.first_closed_by_client.set()
                    return
                if refusing and len(ended) >= self.first:
                    continue  # after our GOAWAY: read (and drop) until the client closes
                for ev in h2c.receive_data(data):
                    if isinstance(ev, h2.events.StreamEnded):
                        ended.append(ev.stream_id)
                        if not refusing:
                            self._respond(h2c, n, ev.stream_id)
                if refusing and len(ended) >= self.first:
                    low = min(ended)
                    self._respond(h2c, n, low)  # encoded now (HPACK order), written after the GOAWAY
                    answer = h2c.data_to_send()
                    h2c.close_connection(last_stream_id=low)
                    conn.sendall(h2c.data_to_send())
                    time.sleep(0.5)
                    conn.sendall(answer)
                else:
                    conn.sendall(h2c.data_to_send())
        except OSError:
            return
        finally:
            conn.close()


def test_streams_above_the_upstreams_goaway_last_stream_id_are_retried_on_a_fresh_connection(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    port = free_port()
    with _RefusingUpstream(first=3) as up:
        proxy = proxy_factory(
            {
                "listeners": [
                    {
                        "name": "web",
                        "address": f"127.0.0.1:{port}",
                        "protocols": ["http1"],
                        "routes": [
                            {
                                "cluster": "h2up",
                                "timeout_ms": 15000,
                                "retry_policy": {"retry_on": "connect-failure,refused-stream", "num_retries": 2},
                            }
                        ],
                    }
                ],
                "clusters": [{"name": "h2up", "protocol": "http2", "endpoints": [f"127.0.0.1:{up.port}"]}],
            }
        )
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda i: httpx.get(f"http://127.0.0.1:{port}/r{i}", timeout=20), range(3)))
        assert [r.status_code for r in replies] == [200, 200, 200], [r.text for r in replies]
        bodies = sorted(r.text for r in replies)
        assert sum(b.startswith("conn 1 stream ") for b in bodies) == 1, bodies  # the one at the last stream id
        assert sum(b.startswith("conn 2 stream ") for b in bodies) == 2, bodies  # the two refused, sent again
        assert up.connections == 2
        # The GOAWAY'd connection closes once its last stream ended.
        assert up.first_closed_by_client.wait(10), "the sidecar kept the GOAWAY'd upstream connection open"
    cluster = proxy.stats()["clusters"]["h2up"]
    assert cluster["upstream_cx_total"] == 2
    assert cluster["upstream_rq_retry"] == 2


def test_without_a_retry_policy_a_stream_refused_by_goaway_gets_the_upstream_reset_answer(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    """Envoy retries a refused stream only when the route's policy says ``refused-stream``."""
    port = free_port()
    with _RefusingUpstream(first=2) as up:
        proxy_factory(
            {
                "listeners": [
                    {
                        "name": "web",
                        "address": f"127.0.0.1:{port}",
                        "protocols": ["http1"],
                        "routes": [{"cluster": "h2up", "timeout_ms": 15000}],
                    }
                ],
                "clusters": [{"name": "h2up", "protocol": "http2", "endpoints": [f"127.0.0.1:{up.port}"]}],
            }
        )
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda i: httpx.get(f"http://127.0.0.1:{port}/r{i}", timeout=20), range(2)))
        assert sorted(r.status_code for r in replies) == [200, 503]  # ReplyStatus.UPSTREAM_RESET
        assert up.connections == 1


# -- a client that sends GOAWAY ---------------------------------------------------------------------
def _frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def _frames(sock: socket.socket, until: float) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of every frame read until EOF or ``until``; ends with a
    (-1, 0, 0, b"") marker when the peer closed."""
    buf = b""
    while time.monotonic() < until:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            yield -1, 0, 0, b""
            return
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            yield buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9 : 9 + length]
            buf = buf[9 + length :]


@pytest.fixture
def slow_origin() -> Iterator[UpstreamServer]:
    with UpstreamServer("origin") as up:
        yield up


def test_a_client_goaway_still_gets_its_response_and_ping_ack_then_the_connection_closes(
    proxy_factory: Callable[..., ProxyProcess],
    slow_origin: UpstreamServer,
) -> None:
    port = free_port()
    proxy_factory(
        {
            "listeners": [
                {
                    "name": "h2",
                    "address": f"127.0.0.1:{port}",
                    "protocols": ["http2"],
                    "routes": [{"cluster": "origin"}],
                }
            ],
            "clusters": [{"name": "origin", "protocol": "http1", "endpoints": [slow_origin.address]}],
        }
    )
    block = hpack.Encoder().encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "origin"), (":path", "/slow?ms=600")]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            PREFACE
            + _frame(0x4, 0, 0, b"")
            + _frame(0x4, 0x1, 0, b"")
            + _frame(0x1, 0x5, 1, block)
            + _frame(0x7, 0, 0, struct.pack(">II", 1, 0))
        )  # GOAWAY(last 1, NO_ERROR)
        time.sleep(0.2)
        sock.sendall(_frame(0x6, 0, 0, b"pingpong"))  # a PING in a later read
        seen = list(_frames(sock, time.monotonic() + 10))
    kinds = [(t, flags, sid) for t, flags, sid, _ in seen]
    assert (0x6, 0x1, 0) in kinds, f"no PING ACK after the client's GOAWAY: {kinds}"
    ack = next(p for t, flags, _, p in seen if t == 0x6 and flags & 1)
    assert ack == b"pingpong"
    headers = [p for t, _, sid, p in seen if t == 0x1 and sid == 1]
    assert headers, f"no response on stream 1: {kinds}"
    assert (b":status", b"200") in hpack.Decoder().decode(headers[0], raw=True)
    data = b"".join(p for t, _, sid, p in seen if t == 0x0 and sid == 1)
    assert data == b"slow done\n"
    assert any(t == 0x0 and sid == 1 and flags & 1 for t, flags, sid in kinds) or any(
        t == 0x1 and sid == 1 and flags & 1 for t, flags, sid in kinds
    )
    assert seen[-1][0] == -1, f"the sidecar kept the connection open after the client's GOAWAY: {kinds}"
