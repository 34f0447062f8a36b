"""A grpcio client that makes every kind of call to ``echo_server.py`` and prints the outcomes.

Usage: ``python echo_client.py TARGET [CALL ...]`` where CALL is one of unary, server_stream,
client_stream, bidi, big, slow, fail, many (500 unary calls in flight at once on one channel),
unavailable (default: all but many and unavailable). Prints one JSON
object: ``{call: {"code": "OK", "replies": [...], "trailers": {...}, "details": ...}}``, replies
as text (``big`` reports the reply length and whether it matched).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import grpc

SERVICE = "sofamesh.test.Echo"
MAX_MESSAGE = 32 * 1024 * 1024
BIG = bytes(range(256)) * (10 * 1024 * 1024 // 256)  # 10 MiB


def _method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def _outcome(call: Callable[[], tuple[list[bytes], Any]]) -> dict[str, Any]:
    try:
        replies, rpc = call()
    except grpc.RpcError as err:
        return {"code": err.code().name, "details": err.details(), "replies": []}
    trailers = dict(rpc.trailing_metadata() or ()) if rpc is not None else {}
    return {"code": "OK", "replies": [r.decode() for r in replies], "trailers": trailers}


def run(target: str, calls: list[str]) -> dict[str, Any]:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    out: dict[str, Any] = {}
    with grpc.insecure_channel(target, options=options) as channel:
        unary = channel.unary_unary(_method("Unary"))
        server_stream = channel.unary_stream(_method("ServerStream"))
        client_stream = channel.stream_unary(_method("ClientStream"))
        bidi = channel.stream_stream(_method("Bidi"))
        slow = channel.unary_unary(_method("Slow"))
        fail = channel.unary_unary(_method("Fail"))

        def gen(items: list[bytes]) -> Iterator[bytes]:
            yield from items

        def do_unary() -> tuple[list[bytes], Any]:
            reply, rpc = unary.with_call(b"hello", timeout=10)
            return [reply], rpc

        def do_server_stream() -> tuple[list[bytes], Any]:
            rpc = server_stream(b"3:tick", timeout=10)
            return list(rpc), rpc

        def do_client_stream() -> tuple[list[bytes], Any]:
            reply, rpc = client_stream.with_call(gen([b"a", b"b", b"c"]), timeout=10)
            return [reply], rpc

        def do_bidi() -> tuple[list[bytes], Any]:
            rpc = bidi(gen([b"x", b"y"]), timeout=10)
            return list(rpc), rpc

        def do_big() -> tuple[list[bytes], Any]:
            reply, rpc = unary.with_call(BIG, timeout=30)
            ok = reply == b"echo:" + BIG
            return [f"{len(reply)} {'match' if ok else 'MISMATCH'}".encode()], rpc

        def do_slow() -> tuple[list[bytes], Any]:
            reply, rpc = slow.with_call(b"3000", timeout=0.3)
            return [reply], rpc

        def do_many() -> tuple[list[bytes], Any]:
            calls = [unary.future(f"n{i}".encode(), timeout=60) for i in range(500)]
            replies = [c.result() for c in calls]
            ok = sum(r == f"echo:n{i}".encode() for i, r in enumerate(replies))
            return [f"{ok} of 500 match".encode()], None

        def do_fail() -> tuple[list[bytes], Any]:
            reply, rpc = fail.with_call("bad argument: 100% ✓".encode(), timeout=10)
            return [reply], rpc

        table = {
            "unary": do_unary,
            "server_stream": do_server_stream,
            "client_stream": do_client_stream,
            "bidi": do_bidi,
            "big": do_big,
            "slow": do_slow,
            "fail": do_fail,
            "many": do_many,
            "unavailable": do_unary,
        }
        for name in calls:
            out[name] = _outcome(table[name])
    return out


def main() -> None:
    target, *calls = sys.argv[1:]
    calls = calls or ["unary", "server_stream", "client_stream", "bidi", "big", "slow", "fail"]
    print(json.dumps(run(target, calls)), flush=True)


if __name__ == "__main__":
    main()
