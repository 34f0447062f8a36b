"""END_STREAM on the last DATA frame through the proxy, frames read off the wire on both sides.

A client sends HEADERS then DATA(END_STREAM) in one write, as gRPC clients do for a unary call; an
``h2`` library upstream answers HEADERS then DATA(END_STREAM), or HEADERS, DATA and trailers. The
proxy must send the request body upstream as one DATA frame carrying END_STREAM (no empty DATA
after it, as Envoy does), answer the same way downstream, and still end with a trailers HEADERS
frame when the upstream sent trailers.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import hpack

from sofamesh.testing import ProxyProcess, free_port
from tests.integration.accepting import AcceptingServer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS = 0x0, 0x1, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4

Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def _frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def _split(buf: bytes) -> tuple[list[Frame], bytes]:
    out: list[Frame] = []
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + length:
            break
        out.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9 : 9 + length]))
        buf = buf[9 + length :]
    return out, buf


class _Origin(AcceptingServer):
    """An HTTP/2 server (the ``h2`` library) on a thread that keeps every frame it read. Paths
    ending in ``/trailers`` are answered with trailers, the others with END_STREAM on the DATA."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    def serve(self, conn: socket.socket, n: int) -> None:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        conn.settimeout(15)
        raw = b""
        paths: dict[int, str] = {}
        try:
            conn.sendall(h2c.data_to_send())
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                raw += data
                if raw.startswith(PREFACE):
                    frames, rest = _split(raw[len(PREFACE) :])
                    self.frames += frames
                    raw = PREFACE + rest
                for ev in h2c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        paths[ev.stream_id] = dict(ev.headers)[b":path"].decode()
                    elif isinstance(ev, h2.events.DataReceived):
                        h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        sid = ev.stream_id
                        h2c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
                        if paths.get(sid, "").endswith("/trailers"):
                            h2c.send_data(sid, b"\x00\x00\x00\x00\x02ok")
                            h2c.send_headers(sid, [("grpc-status", "0")], end_stream=True)
                        else:
                            h2c.send_data(sid, b"\x00\x00\x00\x00\x02ok", end_stream=True)
                conn.sendall(h2c.data_to_send())
        except OSError:
            return
        finally:
            conn.close()


def _call(port: int, path: str, body: bytes) -> list[Frame]:
    """One request (HEADERS, then DATA with END_STREAM, in one write); the frames of stream 1
    read until the stream ended."""
    block = hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "origin"),
            (":path", path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    seen: list[Frame] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            PREFACE
            + _frame(SETTINGS, 0, 0, b"")
            + _frame(HEADERS, END_HEADERS, 1, block)
            + _frame(DATA, END_STREAM, 1, body)
        )
        buf = b""
        until = time.monotonic() + 15
        while time.monotonic() < until:
            sock.settimeout(max(0.05, until - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                break
            frames, buf = _split(buf + data)
            for f in frames:
                if f[0] == SETTINGS and not f[1] & 1:
                    sock.sendall(_frame(SETTINGS, 1, 0, b""))
            seen += [f for f in frames if f[2] == 1]
            if any(f[1] & END_STREAM and f[0] in (DATA, HEADERS) for f in seen):
                break
    return seen


def _kinds(frames: list[Frame]) -> list[tuple[str, bool, int]]:
    names = {DATA: "DATA", HEADERS: "HEADERS"}
    return [(names.get(t, str(t)), bool(flags & END_STREAM), len(p)) for t, flags, _sid, p in frames]


BODY = b"\x00\x00\x00\x00\x05hello"


def _through(proxy_factory: Callable[..., ProxyProcess], path: str) -> tuple[list[Frame], list[Frame]]:
    """One call through a proxy to the origin: the HEADERS and DATA frames the origin read, and
    those of stream 1 the client read. The origin reads the whole request before it answers."""
    with _Origin() as origin:
        port = free_port()
        listener = {
            "name": "h2",
            "address": f"127.0.0.1:{port}",
            "protocols": ["http2"],
            "routes": [{"cluster": "origin"}],
        }
        cluster = {"name": "origin", "protocol": "http2", "endpoints": [f"127.0.0.1:{origin.port}"]}
        proxy_factory({"listeners": [listener], "clusters": [cluster]})
        answer = _call(port, path, BODY)
        return [f for f in origin.frames if f[0] in (DATA, HEADERS)], answer


def test_a_body_read_with_its_end_goes_out_as_one_data_frame_with_end_stream_both_ways(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    upstream, answer = _through(proxy_factory, "/sofamesh.test.Echo/Unary")
    assert _kinds(upstream)[1:] == [("DATA", True, len(BODY))], f"upstream frames: {_kinds(upstream)}"
    assert _kinds(upstream)[0][:2] == ("HEADERS", False)
    assert upstream[1][3] == BODY
    assert [k[:2] for k in _kinds(answer)] == [("HEADERS", False), ("DATA", True)], f"client frames: {_kinds(answer)}"
    assert answer[1][3] == b"\x00\x00\x00\x00\x02ok"


def test_a_response_with_trailers_still_ends_on_its_trailers_frame(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    upstream, answer = _through(proxy_factory, "/sofamesh.test.Echo/trailers")
    assert [k[:2] for k in _kinds(upstream)] == [("HEADERS", False), ("DATA", True)], f"upstream: {_kinds(upstream)}"
    kinds = [k[:2] for k in _kinds(answer)]
    assert kinds == [("HEADERS", False), ("DATA", False), ("HEADERS", True)], f"client frames: {_kinds(answer)}"
    decoder = hpack.Decoder()
    decoder.decode(answer[0][3], raw=True)
    assert (b"grpc-status", b"0") in decoder.decode(answer[2][3], raw=True)
