"""Dubbo direct vs through sofamesh, side by side in one run: req/s and proxy CPU µs per request.

usage: python benchmarks/dubbo_proxy.py [SECONDS] [CONNECTIONS] [IN_FLIGHT_PER_CONNECTION]

An @dubbo.ts provider (tests/conformance/peers/dubbo, installed by scripts/setup.d/21-dubbo-peers.sh)
serves ``echo``; an asyncio load generator replays a dubbo2.js-shaped request frame with fresh ids,
keeping a fixed number of requests in flight per connection. A second scenario routes on the
``group`` attachment, which makes the proxy skip the arguments to reach it. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA, ResponseHead
from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
from sofamesh.plugins.protocols.dubbo.frames import encode_request, encode_string
from sofamesh.testing import ProxyProcess, free_port

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "tests/conformance/peers/dubbo"
NODE_MODULES = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache") / "npm/dubbo/node_modules"
SERVICE = "com.sofamesh.demo.EchoService"
ATTACHMENTS = {"application": "dubbo2.js", "group": "g1", "interface": SERVICE, "path": SERVICE,
               "version": "1.0.0"}
REQUEST = encode_request(0, SERVICE, "echo", version="1.0.0", parameter_types="Ljava/lang/String;",
                         args=encode_string("hello dubbo"), attachments=ATTACHMENTS)
_CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (one proxy process), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


async def load(address: tuple[str, int], seconds: float, connections: int, in_flight: int) -> tuple[int, int]:
    """Returns (answered, errors); ids are fresh per connection, rewritten into one frame."""
    deadline = time.monotonic() + seconds
    totals = [0, 0]

    async def one() -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
        codec = DubboCodec(Role.CLIENT, CodecLimits())
        ids = iter(range(1, 1 << 62))
        outstanding = 0

        def send(n: int) -> None:
            nonlocal outstanding
            writer.write(b"".join(codec.rewrite_request_id(REQUEST, next(ids)) for _ in range(n)))
            outstanding += n

        send(in_flight)
        while outstanding:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            codec.receive_data(data)
            done = 0
            while (ev := codec.next_event()) is not NEED_DATA:
                if isinstance(ev, ResponseHead):
                    done += 1
                    totals[1] += ev.status != 20
            outstanding -= done
            totals[0] += done
            if done and time.monotonic() < deadline:
                send(done)
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return totals[0], totals[1]


def run(label: str, port: int, seconds: float, connections: int, in_flight: int, proxy_pid: int | None) -> None:
    address = ("127.0.0.1", port)
    asyncio.run(load(address, 1.0, connections, in_flight))  # warm up
    cpu0 = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    t0 = time.perf_counter()
    answered, errors = asyncio.run(load(address, seconds, connections, in_flight))
    dt = time.perf_counter() - t0
    line = f"{label:<22} {answered / dt:9.0f} req/s  ({answered} answered, {errors} errors)"
    if proxy_pid:
        cpu = cpu_seconds(proxy_pid) - cpu0
        line += f"  proxy CPU {cpu / max(answered, 1) * 1e6:6.1f} µs/request ({cpu / dt * 100:.0f}% of a core)"
    print(line, flush=True)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    in_flight = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    provider = subprocess.Popen(["node", str(PEERS / "provider.js"), "--name", "bench"], stdout=subprocess.PIPE,
                                env={**os.environ, "NODE_PATH": str(NODE_MODULES)}, cwd=PEERS)
    try:
        assert provider.stdout is not None
        port = int(json.loads(provider.stdout.readline())["port"])
        endpoints = [f"127.0.0.1:{port}"]
        by_service, by_group = free_port(), free_port()
        config = {
            "listeners": [
                {"name": "by_service", "address": f"127.0.0.1:{by_service}", "protocols": ["dubbo"],
                 "routes": [{"match": {"service": SERVICE, "method": "echo"}, "cluster": "echo"}]},
                {"name": "by_group", "address": f"127.0.0.1:{by_group}", "protocols": ["dubbo"],
                 "routes": [{"match": {"service": SERVICE, "group": "g1"}, "cluster": "echo"}]},
            ],
            "clusters": [{"name": "echo", "endpoints": endpoints}],
        }
        print(f"{seconds:.0f} s per run, {connections} connections x {in_flight} in flight, echo frames of "
              f"{len(REQUEST)} bytes")
        with ProxyProcess(config) as proxy:
            assert proxy.proc is not None
            run("direct", port, seconds, connections, in_flight, None)
            run("via sofamesh (service)", by_service, seconds, connections, in_flight, proxy.proc.pid)
            run("via sofamesh (group)", by_group, seconds, connections, in_flight, proxy.proc.pid)
    finally:
        provider.terminate()
        provider.wait(10)
        if provider.stdout is not None:
            provider.stdout.close()


if __name__ == "__main__":
    main()
