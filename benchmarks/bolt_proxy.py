"""Bolt direct vs through sofamesh, side by side in one run: req/s and proxy CPU µs per request.

usage: python benchmarks/bolt_proxy.py [SECONDS] [CONNECTIONS] [IN_FLIGHT_PER_CONNECTION]

A sofa-rpc-node provider (tests/conformance/peers/bolt, installed by
scripts/setup.d/20-bolt-peers.sh) serves ``echo``; an asyncio load generator replays a real
sofa-rpc-node request frame (captured in tests/unit/plugins/protocols/bolt) with fresh ids, keeping
a fixed number of requests in flight per connection. Prints figures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import NEED_DATA, ResponseHead
from sofamesh.plugins.protocols.bolt import BoltCodec
from sofamesh.testing import ProxyProcess, free_port, wait_port

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "tests/conformance/peers/bolt"
_CAPTURED = REPO / "tests/unit/plugins/protocols/bolt/bolt_captured.py"
_spec = importlib.util.spec_from_file_location("bolt_captured", _CAPTURED)
assert _spec is not None and _spec.loader is not None
captured = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(captured)
REQUEST: bytes = captured.NODE_V1_REQUEST
_CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its direct children (worker processes), in seconds."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / _CLK
    return total


async def load(address: tuple[str, int], seconds: float, connections: int, in_flight: int) -> tuple[int, int]:
    """Returns (answered, errors)."""
    deadline = time.monotonic() + seconds
    answered = errors = 0

    async def one() -> None:
        nonlocal answered, errors
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
        codec = BoltCodec(Role.CLIENT, CodecLimits())
        next_id = 1
        outstanding = 0

        def send(n: int) -> None:
            nonlocal next_id, outstanding
            writer.write(b"".join(codec.rewrite_request_id(REQUEST, next_id + i) for i in range(n)))
            next_id += n
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
                    if ev.status:
                        errors += 1
            outstanding -= done
            answered += done
            if done and time.monotonic() < deadline:
                send(done)
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return answered, errors


def run(label: str, address: tuple[str, int], seconds: float, connections: int, in_flight: int,
        proxy_pid: int | None) -> None:
    asyncio.run(load(address, 1.0, connections, in_flight))  # warm up
    cpu0 = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    t0 = time.perf_counter()
    answered, errors = asyncio.run(load(address, seconds, connections, in_flight))
    dt = time.perf_counter() - t0
    line = f"{label:<16} {answered / dt:10.0f} req/s  ({answered} answered, {errors} errors)"
    if proxy_pid:
        cpu = cpu_seconds(proxy_pid) - cpu0
        line += f"  proxy CPU {cpu / max(answered, 1) * 1e6:7.1f} µs/request ({cpu / dt * 100:.0f}% of a core)"
    print(line, flush=True)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    in_flight = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    provider_port, proxy_port = free_port(), free_port()
    provider = subprocess.Popen(["node", "-r", str(PEERS / "loopback.js"), str(PEERS / "provider.js"),
                                 str(provider_port), "com.example.EchoService", "A"],
                                stdout=subprocess.DEVNULL, cwd=PEERS)
    try:
        wait_port("127.0.0.1", provider_port, 20)
        config = {
            "listeners": [{"name": "rpc_in", "address": f"127.0.0.1:{proxy_port}", "protocols": ["bolt"],
                           "routes": [{"match": {"service": "com.example.EchoService:1.0"}, "cluster": "echo"}]}],
            "clusters": [{"name": "echo", "protocol": "bolt", "endpoints": [f"127.0.0.1:{provider_port}"]}],
        }
        print(f"{seconds:.0f} s per run, {connections} connections x {in_flight} in flight, echo('hi') frames of "
              f"{len(REQUEST)} bytes")
        with ProxyProcess(config) as proxy:
            assert proxy.proc is not None
            run("direct", ("127.0.0.1", provider_port), seconds, connections, in_flight, None)
            run("via sofamesh", ("127.0.0.1", proxy_port), seconds, connections, in_flight, proxy.proc.pid)
    finally:
        provider.terminate()
        provider.wait(10)


if __name__ == "__main__":
    main()
