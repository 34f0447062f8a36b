"""Hot upgrade figures: listener take-over time, connections moved per second, and the p99 latency
of requests that started during an upgrade against those that did not, with the load generator's
CPU beside the proxy's.

usage: python benchmarks/hot_upgrade.py [CONNECTIONS] [UPGRADES] [SECONDS_BETWEEN]

An asyncio HTTP/1.1 upstream (its own process) answers every request; a load generator (its own
process) keeps CONNECTIONS keep-alive connections busy through a sidecar and records when each
request started and how long it took. The sidecar is upgraded UPGRADES times (``POST
/hot_upgrade``: it starts its own successor), SECONDS_BETWEEN apart. Figures come from each new
process's ``/hot_upgrade`` (``takeover_ms``: the old process heard the new one connect, until the new
one accepted; ``handover_ms``: from then until every connection had moved). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sofamesh.testing import ProxyProcess, free_port, wait_port

_CLK = os.sysconf("SC_CLK_TCK")
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie left for its parent counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK


# -- the upstream and the load generator (each run as its own process) ------------------------------
async def _upstream(port: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(_RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def _load(port: int, conns: int, seconds: float, out: str) -> None:
    samples: list[tuple[float, float]] = []
    failures = 0
    request = b"GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n"
    end = time.monotonic() + seconds

    async def one() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < end:
                t0 = time.monotonic()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                samples.append((t0, time.monotonic() - t0))
                if not head.startswith(b"HTTP/1.1 200"):
                    failures += 1
        except (OSError, asyncio.IncompleteReadError):
            failures += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    Path(out).write_text(json.dumps({"samples": samples, "failures": failures}))


# -- the run ---------------------------------------------------------------------------------------
def _p99(latencies: list[float]) -> float:
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def _admin(address: str, path: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(f"http://{address}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return dict(json.loads(r.read()))


def main() -> None:
    conns = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    upgrades = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    between = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    me = str(Path(__file__).resolve())
    up_port, port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="sofamesh-bench-upgrade-"))
    upstream = subprocess.Popen([sys.executable, me, "--upstream", str(up_port)])
    wait_port("127.0.0.1", up_port)
    admin = f"127.0.0.1:{free_port()}"
    config = {
        "drain_timeout_ms": 10000,
        "admin": {"address": admin},
        "listeners": [
            {
                "name": "web",
                "address": f"127.0.0.1:{port}",
                "protocols": ["http1"],
                "routes": [{"name": "all", "cluster": "web"}],
            }
        ],
        "clusters": [{"name": "web", "endpoints": [f"127.0.0.1:{up_port}"]}],
    }
    proxy = ProxyProcess(config, args=("--upgrade-socket", str(tmp / "upgrade.sock"))).start()
    seconds = (between + 7) * upgrades + between  # room for each successor's start (a Python process)
    out = tmp / "load.json"
    load = subprocess.Popen([sys.executable, me, "--load", str(port), str(conns), str(seconds), str(out)])
    proxy_cpu: dict[int, float] = {}
    load_cpu = 0.0
    stop = threading.Event()

    def sample_cpu() -> None:  # each process's CPU, last seen before it exited
        nonlocal load_cpu
        while not stop.is_set():
            load_cpu = max(load_cpu, cpu_seconds(load.pid))
            try:
                pid = int(_admin(admin, "/hot_upgrade")["pid"])
            except OSError:
                pid = 0
            for p in {*proxy_cpu, pid} - {0}:
                c = cpu_seconds(p)
                if c:
                    proxy_cpu[p] = c
            stop.wait(0.05)

    sampler = threading.Thread(target=sample_cpu)
    sampler.start()
    windows: list[tuple[float, float]] = []
    reports: list[dict[str, Any]] = []
    try:
        for _ in range(upgrades):
            time.sleep(between)
            old = int(_admin(admin, "/hot_upgrade")["pid"])
            t0 = time.monotonic()
            new = int(_admin(admin, "/hot_upgrade", "POST")["started"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    state = _admin(admin, "/hot_upgrade")
                except OSError:
                    continue
                if state["pid"] == new and state["phase"] == "serving":  # every connection moved
                    break
                time.sleep(0.01)
            windows.append((t0, time.monotonic()))
            reports.append(state)
            while not gone(old) and time.monotonic() < deadline:
                time.sleep(0.01)
        if load.wait(seconds + 30) == 0:
            time.sleep(0.1)
    finally:
        stop.set()
        sampler.join()
        if load.poll() is None:
            load.kill()
        pid = int(_admin(admin, "/hot_upgrade")["pid"])
        os.kill(pid, 15)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proxy.stop(check=False)
        upstream.kill()
        upstream.wait()
    result = json.loads(out.read_text())
    samples: list[tuple[float, float]] = result["samples"]
    during = [dt for t, dt in samples if any(a <= t <= b for a, b in windows)]
    outside = [dt for t, dt in samples if not any(a - 0.2 <= t <= b + 0.2 for a, b in windows)]
    total_s = samples[-1][0] - samples[0][0] if samples else 1.0
    print(
        f"{conns} keep-alive connections, {upgrades} upgrades {between:g} s apart, {len(samples)} requests "
        f"({len(samples) / total_s:.0f}/s), {result['failures']} failed"
    )
    for r in reports:
        rate = r["moved"] / (r["handover_ms"] / 1000) if r["handover_ms"] else float("nan")
        print(
            f"  upgrade: listeners taken over in {r['takeover_ms']:.1f} ms; {r['moved']} connection(s) moved in "
            f"{r['handover_ms']:.1f} ms ({rate:.0f}/s); {r['drained']} drained, {r['cut']} cut"
        )
    # the part of each window from the old process hearing the new one until every connection moved
    moving = [
        (b - (r["takeover_ms"] + r["handover_ms"]) / 1000 - 0.05, b)
        for (_a, b), r in zip(windows, reports, strict=True)
    ]
    during_move = [dt for t, dt in samples if any(a <= t <= b for a, b in moving)]
    window_s = sum(b - a for a, b in windows)
    print(f"  p99 without an upgrade: {_p99(outside):.2f} ms ({len(outside)} requests)")
    print(
        f"  p99 during an upgrade:  {_p99(during):.2f} ms ({len(during)} requests in {window_s:.2f} s from POST "
        "/hot_upgrade to the new process serving every connection, its start-up included)"
    )
    print(f"  p99 during take-over and hand-over: {_p99(during_move):.2f} ms ({len(during_move)} requests)")
    proxy_total = sum(proxy_cpu.values())
    print(
        f"  CPU: proxy processes {proxy_total:.2f} s ({proxy_total / seconds * 100:.0f}% of a core), "
        f"load generator {load_cpu:.2f} s ({load_cpu / seconds * 100:.0f}% of a core), over {seconds:g} s"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--upstream"]:
        asyncio.run(_upstream(int(sys.argv[2])))
    elif sys.argv[1:2] == ["--load"]:
        asyncio.run(_load(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]))
    else:
        main()
