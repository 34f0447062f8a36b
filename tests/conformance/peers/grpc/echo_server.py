"""A grpcio echo server (generic handlers, raw bytes, no generated code) for conformance tests.

Service ``sofamesh.test.Echo``:
  Unary(bytes) -> b"echo:" + bytes
  ServerStream(b"N:word") -> N replies b"word-0" .. b"word-{N-1}"
  ClientStream(stream of bytes) -> b"|".join(messages)
  Bidi(stream of bytes) -> b"bidi:" + message, one reply per message
  Slow(b"<ms>") -> sleeps that many milliseconds, then b"slept"
  Fail(text) -> aborts with INVALID_ARGUMENT and the text as details

Usage: ``python echo_server.py [--port N]``; prints ``READY <port>`` once serving on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

SERVICE = "sofamesh.test.Echo"
MAX_MESSAGE = 32 * 1024 * 1024  # the conformance tests send 10 MiB messages


def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-echo-len", str(len(request))),))
    return b"echo:" + request


def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    count, _, word = request.partition(b":")
    for i in range(int(count)):
        yield word + b"-" + str(i).encode()


def client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return b"|".join(requests)


def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for message in requests:
        yield b"bidi:" + message


def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
    deadline = time.monotonic() + int(request) / 1000
    while time.monotonic() < deadline and context.is_active():
        time.sleep(0.01)
    return b"slept"


def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.decode())
    raise AssertionError("abort returns by raising")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"READY {port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    server.stop(grace=None)
    sys.exit(0)


if __name__ == "__main__":
    main()
