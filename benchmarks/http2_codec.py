"""How much the http2 codec costs for one gRPC unary exchange, beside the ``h2`` library (a dev
dependency, for comparison), measured side by side.

Every side does the same work on the same bytes: decode a client's HEADERS + DATA(+END_STREAM) and
encode HEADERS + DATA + trailers back. "bare h2" drives ``h2.connection.H2Connection`` directly;
"own machine" drives the project's own connection state machine (``machine.Machine``) the same way;
"sofamesh" drives ``Http2Codec`` (that machine plus events, routing keys, flow-control bookkeeping).
Prints the exchanges per second of each and their ratios.

Usage: ``python benchmarks/http2_codec.py [--streams N] [--batch B] [--rounds R]``
"""

from __future__ import annotations

import argparse
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA, BodyChunk, EndOfMessage, RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.http2 import Http2Codec
from sofamesh.plugins.protocols.http2.machine import DataReceived, Machine

PAYLOAD = b"\x00" + struct.pack(">I", 64) + b"p" * 64
HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/echo.v1.Echo/Say"),
    (":authority", "echo:50051"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("grpc-timeout", "1S"),
    ("user-agent", "grpc-python/1.85"),
]
RESPONSE = Headers([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS = Headers([("grpc-status", "0")])


MAX_STREAMS = 100_000
WINDOW = 16 * 1024 * 1024


def client_chunks(streams: int, batch: int) -> list[bytes]:
    """What a client sends for ``streams`` unary calls on one connection, ``batch`` calls per read,
    after it has read the server's SETTINGS and connection WINDOW_UPDATE (the same for both)."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.increment_flow_control_window(WINDOW - 65_535)  # room for every response on the connection
    server = Http2Codec(Role.SERVER, CodecLimits(), max_concurrent_streams=MAX_STREAMS, connection_window_size=WINDOW)
    client.receive_data(server.data_to_send())
    chunks = []
    for i in range(streams):
        sid = 2 * i + 1
        client.send_headers(sid, HEADERS)
        client.send_data(sid, PAYLOAD, end_stream=True)
        if (i + 1) % batch == 0 or i + 1 == streams:
            chunks.append(client.data_to_send())
    return chunks


def run_bare(chunks: list[bytes]) -> int:
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    conn.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS}
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(WINDOW - 65_535)
    done = 0
    for chunk in chunks:
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                sid = ev.stream_id
                conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                conn.send_data(sid, PAYLOAD)
                conn.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
                conn.data_to_send()
                done += 1
    return done


def run_machine(chunks: list[bytes]) -> int:
    conn = Machine(client=False, max_concurrent_streams=MAX_STREAMS, connection_window_size=WINDOW)
    conn.data_to_send()
    done = 0
    for chunk in chunks:
        for ev in conn.receive_data(chunk):
            if type(ev) is DataReceived:
                sid = ev.stream_id
                conn.acknowledge(sid, len(ev.data))
                if ev.end_stream:
                    conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                    conn.send_data(sid, PAYLOAD)
                    conn.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
                    done += 1
        conn.data_to_send()
    return done


def run_codec(chunks: list[bytes]) -> int:
    codec = Http2Codec(Role.SERVER, CodecLimits(), max_concurrent_streams=MAX_STREAMS, connection_window_size=WINDOW)
    done = 0
    for chunk in chunks:
        codec.receive_data(chunk)
        while (ev := codec.next_event()) is not NEED_DATA:
            if isinstance(ev, BodyChunk):
                codec.acknowledge(ev.stream_id, len(ev.data))
            elif isinstance(ev, EndOfMessage):
                sid = ev.stream_id
                codec.send(ResponseHead("http2", request_id=sid, headers=RESPONSE, end_stream=False))
                codec.send(BodyChunk(PAYLOAD, stream_id=sid))
                codec.send(EndOfMessage(TRAILERS, stream_id=sid))
                done += 1
            elif isinstance(ev, RequestHead):
                assert ev.service == "echo.v1.Echo"
        codec.data_to_send()
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50, help="calls per read (open streams at once)")
    args = parser.parse_args()
    wire = client_chunks(args.streams, args.batch)

    best = {"bare h2": 1e9, "own machine": 1e9, "sofamesh": 1e9}
    runs = (
        ("bare h2", run_bare),
        ("own machine", run_machine),
        ("sofamesh", run_codec),
    )
    for _ in range(args.rounds):  # interleaved, so all see the same machine state
        for name, fn in runs:
            start = time.perf_counter()
            assert fn(wire) == args.streams
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{name:15s} {args.streams / seconds:10.0f} unary exchanges/s (best of {args.rounds})")
    print(f"ratio sofamesh/bare h2 time: {best['sofamesh'] / best['bare h2']:.2f}")
    print(f"ratio own machine/bare h2 time: {best['own machine'] / best['bare h2']:.2f}")
    print(f"ratio sofamesh/own machine time: {best['sofamesh'] / best['own machine']:.2f}")


if __name__ == "__main__":
    main()
