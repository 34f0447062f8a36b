"""An apache-dubbo 3.0.0b1 Triple provider (runs in ``.cache/venv-dubbo3``) for conformance tests.

Service ``com.example.triple.Greeter``:
  sayHello(bytes) -> b"hello, " + bytes
  sayHellos(b"N:name") -> server stream of N replies b"hello #i, name"
  fail(bytes) -> raises, which Triple answers trailers-only with grpc-status 13
  whoami(bytes) -> the provider's --name (default "provider"), so tests can tell providers apart

Usage: ``python provider.py --port N [--name NAME]``; prints ``READY <port>`` once exported on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

import dubbo
from dubbo.configs import ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "com.example.triple.Greeter"


def say_hello(request: bytes) -> bytes:
    return b"hello, " + request


def say_hellos(stream: Any) -> None:
    # apache-dubbo hands a streaming method its read/write stream rather than the request.
    count, _, name = stream.read().partition(b":")
    for i in range(int(count)):
        stream.write(b"hello #" + str(i).encode() + b", " + name)
    stream.done_writing()


def fail(request: bytes) -> bytes:
    raise ValueError("provider refused " + request.decode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="provider")
    args = parser.parse_args()
    name = args.name.encode()
    handler = RpcServiceHandler(
        service_name=SERVICE,
        method_handlers=[
            RpcMethodHandler.unary(say_hello, method_name="sayHello"),
            RpcMethodHandler.server_stream(say_hellos, method_name="sayHellos"),
            RpcMethodHandler.unary(fail, method_name="fail"),
            RpcMethodHandler.unary(lambda _request: name, method_name="whoami"),
        ],
    )
    server = dubbo.Server(ServiceConfig(handler, host="127.0.0.1", port=args.port))
    server.start()
    print(f"READY {args.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
