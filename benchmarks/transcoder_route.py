"""A transcoded HTTP/JSON -> Dubbo call vs a plain proxied HTTP request, side by side in one run:
req/s and proxy CPU µs per request.

usage: python benchmarks/transcoder_route.py [SECONDS] [CONNECTIONS] [plain]

``plain`` measures only ``/plain``, on a config without the transcoder, so the same figure can be
taken of a proxy installed from a source without the transcoder.

One sofamesh proxy serves two routes on one HTTP/1.1 listener: ``/greet`` (route filter
``transcoder``: the JSON body becomes a Dubbo call to a @dubbo.ts provider, installed by
scripts/setup.d/21-dubbo-peers.sh, and its answer JSON again) and ``/plain`` (forwarded to a small
HTTP/1.1 server in this process that answers the same JSON). Keep-alive clients send one request at
a time per connection. The proxy's CPU time is read from /proc. Prints figures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sofamesh.testing import ProxyProcess, free_port

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "tests/conformance/peers/dubbo"
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
SERVICE = "com.sofamesh.demo.EchoService"
BODY = json.dumps([{"name": "ann", "n": 5}]).encode()
ANSWER = json.dumps({"greeting": "hello ann", "n": 5, "name": "ann"}).encode()
_CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


async def _plain_server(port: int) -> asyncio.Server:
    response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(ANSWER),
        ANSWER,
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", port)


async def _load(port: int, path: str, seconds: float, connections: int) -> tuple[int, int]:
    request = b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        path.encode(),
        len(BODY),
        BODY,
    )
    deadline = time.monotonic() + seconds
    answered = errors = 0

    async def one() -> None:
        nonlocal answered, errors
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        while time.monotonic() < deadline:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            body = await asyncio.wait_for(reader.readexactly(length), 10)
            if head.startswith(b"HTTP/1.1 200") and body.replace(b" ", b"") == ANSWER.replace(b" ", b""):
                answered += 1
            else:
                errors += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return answered, errors


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    plain_only = len(sys.argv) > 3 and sys.argv[3] == "plain"
    env = {**os.environ, "NODE_PATH": str(CACHE / "npm/dubbo/node_modules")}
    provider = subprocess.Popen(
        ["node", str(PEERS / "provider.js"), "--name", "p1", "--port", "0"],
        stdout=subprocess.PIPE,
        env=env,
        cwd=PEERS,
    )
    try:
        assert provider.stdout is not None
        dubbo_port = int(json.loads(provider.stdout.readline())["port"])
        plain_port, listen = free_port(), free_port()
        transcoder = {
            "protocol": "dubbo",
            "interface": SERVICE,
            "version": "1.0.0",
            "method": "greet",
            "arguments": [{"name": "person", "type": "com.sofamesh.demo.Person"}],
        }
        config = {
            "listeners": [
                {
                    "name": "edge",
                    "address": f"127.0.0.1:{listen}",
                    "protocols": ["http1"],
                    "routes": [
                        *(
                            []
                            if plain_only
                            else [
                                {
                                    "match": {"path": {"prefix": "/greet"}},
                                    "cluster": "dubbo",
                                    "filters": [{"type": "transcoder", "config": transcoder}],
                                }
                            ]
                        ),
                        {"match": {"path": {"prefix": "/plain"}}, "cluster": "plain"},
                    ],
                }
            ],
            "clusters": [
                {"name": "dubbo", "protocol": "dubbo", "endpoints": [f"127.0.0.1:{dubbo_port}"]},
                {"name": "plain", "protocol": "http1", "endpoints": [f"127.0.0.1:{plain_port}"]},
            ],
        }

        async def run() -> None:
            server = await _plain_server(plain_port)
            with ProxyProcess(config) as proxy:
                assert proxy.proc is not None
                pid = proxy.proc.pid
                paths = ("/plain",) if plain_only else ("/plain", "/greet")
                for path in paths:  # warm-up: connections, caches
                    await _load(listen, path, 1.0, connections)
                for _ in range(2):  # interleaved, twice
                    for path in paths:
                        cpu0, t0 = cpu_seconds(pid), time.monotonic()
                        answered, errors = await _load(listen, path, seconds, connections)
                        cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
                        per = cpu / answered * 1e6 if answered else float("nan")
                        print(
                            f"{path:7} {answered / wall:8.0f} req/s  proxy CPU {per:6.1f} µs/request  errors {errors}"
                        )
            await asyncio.sleep(0.5)  # the proxy's upstream connections end: their handlers return
            server.close()
            await server.wait_closed()

        asyncio.run(run())
    finally:
        provider.terminate()
        provider.wait(10)


if __name__ == "__main__":
    main()
