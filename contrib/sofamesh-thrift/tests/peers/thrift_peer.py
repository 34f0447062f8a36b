"""A real Thrift peer (PyPI thriftpy2), run with the interpreter of $SOFAMESH_CACHE/venv-thrift.

    thrift_peer.py server PORT NAME [--multiplexed] [--lenient]   serve tests/echo.thrift (framed, binary;
                                                                    --lenient also reads non-strict headers)
    thrift_peer.py client PORT PROGRAM [--threads N] [--service S] [--non-strict]
    thrift_peer.py pipeline PORT CONNECTIONS COUNT       COUNT calls written at once over CONNECTIONS sockets

PROGRAM is JSON: [["echo", "hi"], ["notify", "x"], ...]; "{i}" in a string argument becomes the
thread index. Clients print one JSON document on stdout.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import thriftpy2
from thriftpy2.protocol import TBinaryProtocol, TBinaryProtocolFactory
from thriftpy2.protocol.multiplex import TMultiplexedProtocolFactory
from thriftpy2.rpc import make_client
from thriftpy2.server import TThreadedServer
from thriftpy2.thrift import TApplicationException, TMessageType, TMultiplexedProcessor, TProcessor
from thriftpy2.transport import TFramedTransportFactory, TMemoryBuffer, TServerSocket

echo = thriftpy2.load(str(Path(__file__).parents[1] / "echo.thrift"), module_name="echo_thrift")


class EchoHandler:
    def __init__(self, name: str) -> None:
        self.name = name
        self._notes: list[str] = []

    def echo(self, text: str) -> str:
        return f"{self.name}:{text}"

    def add(self, a: int, b: int) -> int:
        return a + b

    def lookup(self, key: str) -> str:
        if key == "known":
            return "value"
        raise echo.NotFound(key=key)

    def notify(self, note: str) -> None:
        self._notes.append(note)

    def notes(self) -> list[str]:
        return list(self._notes)

    def slow(self, ms: int) -> str:
        time.sleep(ms / 1000.0)
        return f"slept {ms}"


class AdminHandler:
    def __init__(self, name: str) -> None:
        self.name = name

    def whoami(self) -> str:
        return self.name


def serve(port: int, name: str, multiplexed: bool, strict_read: bool) -> None:
    if multiplexed:
        processor: Any = TMultiplexedProcessor()
        processor.register_processor("Echo", TProcessor(echo.Echo, EchoHandler(name)))
        processor.register_processor("Admin", TProcessor(echo.Admin, AdminHandler(name)))
    else:
        processor = TProcessor(echo.Echo, EchoHandler(name))
    sock = TServerSocket(host="127.0.0.1", port=port, client_timeout=None)
    server = TThreadedServer(processor, sock, iprot_factory=TBinaryProtocolFactory(strict_read=strict_read),
                             itrans_factory=TFramedTransportFactory(), daemon=True)
    print("serving", flush=True)
    server.serve()


def _result(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return {"ok": fn(*args)}
    except TApplicationException as exc:
        return {"error": "TApplicationException", "type": exc.type, "message": exc.message}
    except echo.NotFound as exc:
        return {"error": "NotFound", "key": exc.key}
    except Exception as exc:  # a transport failure is a result too: the test asserts on it
        return {"error": type(exc).__name__, "message": str(exc)}


def run_client(port: int, program: list[list[Any]], threads: int, service: str | None, strict: bool) -> None:
    proto: Any = TBinaryProtocolFactory(strict_read=strict, strict_write=strict)
    if service:
        proto = TMultiplexedProtocolFactory(proto, service)
    thrift_service = echo.Admin if service == "Admin" else echo.Echo
    out: list[Any] = [None] * threads

    def one(i: int) -> None:
        client = make_client(thrift_service, "127.0.0.1", port, proto_factory=proto,
                             trans_factory=TFramedTransportFactory(), timeout=10000)
        try:
            res = []
            for call, *args in program:
                args = [a.replace("{i}", str(i)) if isinstance(a, str) else a for a in args]
                res.append(_result(getattr(client, call), *args))
            out[i] = res
        finally:
            client.close()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    print(json.dumps(out[0] if threads == 1 else out))


def pipeline(port: int, connections: int, count: int) -> None:
    """COUNT echo calls with distinct seqids, all written before any reply is read."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(connections)]
    expected: dict[tuple[int, int], str] = {}
    for c, s in enumerate(socks):
        frames = []
        for k in range(c, count, connections):
            buf = TMemoryBuffer()
            p = TBinaryProtocol(buf)
            p.write_message_begin("echo", TMessageType.CALL, k + 1)
            echo.Echo.echo_args(text=f"p{k}").write(p)
            p.write_message_end()
            body = buf.getvalue()
            frames.append(struct.pack(">i", len(body)) + body)
            expected[(c, k + 1)] = f"p{k}"
        s.sendall(b"".join(frames))
    got: dict[str, int] = {"ok": 0, "wrong": 0}
    for c, s in enumerate(socks):
        f = s.makefile("rb")
        for _ in range(len([k for k in expected if k[0] == c])):
            n = struct.unpack(">i", f.read(4))[0]
            p = TBinaryProtocol(TMemoryBuffer(f.read(n)))
            _, mtype, seqid = p.read_message_begin()
            res = echo.Echo.echo_result()
            res.read(p)
            want = expected.pop((c, seqid), None)
            ok = mtype == TMessageType.REPLY and want is not None and res.success.endswith(":" + want)
            got["ok" if ok else "wrong"] += 1
        s.close()
    print(json.dumps({**got, "missing": len(expected)}))


def main(argv: list[str]) -> None:
    mode, port = argv[0], int(argv[1])
    if mode == "server":
        serve(port, argv[2], "--multiplexed" in argv, "--lenient" not in argv)
    elif mode == "client":
        threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 1
        service = argv[argv.index("--service") + 1] if "--service" in argv else None
        run_client(port, json.loads(argv[2]), threads, service, "--non-strict" not in argv)
    elif mode == "pipeline":
        pipeline(port, int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
