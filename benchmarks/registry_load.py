"""Pilot under registry-API load: E Eureka instances renewing at a fixed rate, then N Nacos instances
beating every 5 s; Pilot's CPU and RSS, the load generator's own CPU beside them, and the time from a
registration until a sidecar's xDS stream has the new endpoint.

    .venv/bin/python benchmarks/registry_load.py [--eureka 10000] [--rates 333] [--nacos 5000]
        [--nacos-grpc 5000] [--grpc-workers 5] [--seconds 30] [--samples 20] [--json out.json]

Pilot (``python -m sofamesh pilot``) runs as a child process with the ``eureka`` and ``nacos``
registries on ports of their own, pinned to CPU 0 when the machine has two; this process (the load
generator and the xDS probe) is pinned to CPU 1. The generator keeps a few keep-alive connections
per API and writes pre-built HTTP/1.1 requests in batches every 10 ms, pipelined, counting answers
by their status line: a renewal costs it a few microseconds, so it is not the limit (its CPU is
reported beside Pilot's). Phases:

1. register the Eureka instances (``POST apps/{APP}``, 100 apps) as fast as answers come back;
2. for each rate in ``--rates``: renewals (``PUT apps/{APP}/{id}``, every instance in turn) offered at
   that rate for ``--seconds``; 333/s is 10 000 instances renewing every 30 s (Eureka's default
   ``renewalIntervalInSecs``: the issue's load), and 30 s renews each of them once; during the first
   rate, the Eureka registration-to-xDS probe (4.) runs;
3. register the Nacos instances (``POST instance``, 50 services; ``--nacos 0`` skips 3.); each beats
   every 5 s from its registration on (``PUT instance/beat``; the registration phase's CPU includes
   the beats of those already registered), and the beats are measured for ``--seconds`` once all
   are registered, with the Nacos probe (4.) during them;
4. ``--samples`` registrations of a fresh instance of a probe service, one at a time, each timed
   from the API's answer until an ADS stream subscribed to that service's EDS (as a sidecar's is)
   receives the endpoint.
5. ``--nacos-grpc`` Nacos 2 gRPC connections (the HTTP beats stopped), opened by ``--grpc-workers``
   child processes of this script (grpc.aio, one channel and so one HTTP/2 connection each, Payloads
   built with ``grpc_wire.py``): server check, the bidirectional stream's ``ConnectionSetupRequest``,
   one ``InstanceRequest`` each (50 services); then every connection sends a ``HealthCheckRequest``
   every 5 s (what Nacos 2 clients do on an idle connection) for ``--seconds``, and ``--samples``
   registrations over a gRPC connection of this process are timed until the EDS stream has them. The
   workers' CPU is reported as the generator's.

Per phase: offered and answered requests a second, non-2xx answers, Pilot's CPU (cores: CPU seconds
over wall seconds, and CPU microseconds per answered request: the figure that survives a shared
machine) and RSS, the generator's CPU the same two ways, the 1-minute load average, and for the
probe p50 / max milliseconds. On a loaded machine the wall-clock rates fall short of the offered
ones while the CPU per request holds; the cores Pilot needs for a rate are its CPU per request times
that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from sofamesh.pilot.xds.generator import ENDPOINT
from sofamesh.testing import free_port

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
TICK_S = 0.01
MAX_INFLIGHT = 4000  # per connection: past it the offered load is not sent (the answered rate shows it)


def pilot_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pilot_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def request(method: str, path: str, body: bytes = b"", ctype: str = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += f"Content-Type: {ctype}\r\nAccept: application/json\r\n"
    return head.encode() + b"\r\n" + body


class Conn:
    """One keep-alive connection: requests written pipelined, answers counted by status class."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.inflight = 0
        self.written = 0
        self.ok = 0
        self.bad = 0
        self.statuses: dict[int, int] = {}
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        buf = b""
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                return
            buf += data
            pos = 0
            while True:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                head = buf[pos:end]
                length = 0
                cl = head.lower().find(b"content-length:")
                if cl >= 0:
                    eol = head.find(b"\r\n", cl)
                    length = int(head[cl + 15 : eol if eol > 0 else len(head)])
                if len(buf) < end + 4 + length:
                    break
                status = int(head[9:12])
                if 200 <= status < 300:
                    self.ok += 1
                else:
                    self.bad += 1
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                self.inflight -= 1
                pos = end + 4 + length
            buf = buf[pos:]

    def send(self, batch: list[bytes]) -> None:
        self.inflight += len(batch)
        self.written += len(batch)
        self.writer.write(b"".join(batch))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.writer.close()


async def connect(port: int, n: int) -> list[Conn]:
    out = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out.append(Conn(r, w))
    return out


class Meter:
    """Pilot's CPU and the generator's own over one phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0, self.pilot0, self.own0 = time.monotonic(), pilot_cpu_s(pid), own_cpu_s()

    def result(self, answered: int, bad: int, offered: float | None, window_s: float | None = None) -> dict[str, Any]:
        """``window_s``: the seconds the load was offered (rates are over it; CPU over the whole phase)."""
        wall = time.monotonic() - self.t0
        pilot, own = pilot_cpu_s(self.pid) - self.pilot0, own_cpu_s() - self.own0
        per = max(answered, 1)
        return {
            "seconds": round(wall, 2),
            "offered_per_s": None if offered is None else round(offered),
            "answered_per_s": round(answered / (window_s or wall)),
            "answered": answered,
            "non_2xx": bad,
            "pilot_cores": round(pilot / wall, 3),
            "pilot_cpu_us_per_request": round(pilot / per * 1e6),
            "pilot_rss_mb": round(pilot_rss_mb(self.pid), 1),
            "generator_cores": round(own / wall, 3),
            "generator_cpu_us_per_request": round(own / per * 1e6),
            "load_average_1m": round(os.getloadavg()[0], 1),
        }


async def flood(
    conns: list[Conn], requests: list[bytes], pid: int, window: int = 256, sent: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Send every request once, as fast as answers come back (at most ``window`` in flight a
    connection); request ``n`` goes on connection ``n % len(conns)``, and ``sent(n)`` is called once
    it is written."""
    meter = Meter(pid)
    bad0 = sum(c.bad for c in conns)
    queues = [list(range(k, len(requests), len(conns))) for k in range(len(conns))]
    pos = [0] * len(conns)
    while any(pos[k] < len(q) for k, q in enumerate(queues)):
        for k, c in enumerate(conns):
            room = window - c.inflight
            if room > 0 and pos[k] < len(queues[k]):
                chunk = queues[k][pos[k] : pos[k] + room]
                c.send([requests[n] for n in chunk])
                pos[k] += len(chunk)
                for n in chunk if sent is not None else ():
                    sent(n)
        await asyncio.sleep(0.001)
    # answers come in order on each connection: all of ours are in once each has answered what it was
    # sent so far (other traffic on the same connections, such as beats, included)
    written = [c.written for c in conns]
    while any(c.ok + c.bad < w for c, w in zip(conns, written, strict=True)):
        await asyncio.sleep(0.001)
    answered = len(requests)
    return meter.result(answered, sum(c.bad for c in conns) - bad0, None)


class BeatFleet:
    """Nacos clients: each instance, once registered (``add``), beats every ``interval_s`` from then
    on, on the connection its registration took (so a beat never overtakes it)."""

    def __init__(self, conns: list[Conn], beats: list[bytes], interval_s: float = 5.0) -> None:
        self.conns, self.beats, self.interval_s = conns, beats, interval_s
        self.due: collections.deque[tuple[float, int]] = collections.deque()
        self.sent = 0
        self.task = asyncio.get_running_loop().create_task(self._run())

    def add(self, n: int) -> None:
        self.due.append((time.monotonic() + self.interval_s, n))

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            per: list[list[bytes]] = [[] for _ in self.conns]
            while self.due and self.due[0][0] <= now:
                _t, n = self.due.popleft()
                per[n % len(self.conns)].append(self.beats[n])
                self.due.append((now + self.interval_s, n))
            for c, batch in zip(self.conns, per, strict=True):
                if batch and c.inflight < MAX_INFLIGHT:
                    c.send(batch)
                    self.sent += len(batch)
            await asyncio.sleep(TICK_S)

    async def measure(self, seconds: float, pid: int) -> dict[str, Any]:
        meter = Meter(pid)
        ok0, bad0, sent0 = sum(c.ok for c in self.conns), sum(c.bad for c in self.conns), self.sent
        await asyncio.sleep(seconds)
        ok, bad = sum(c.ok for c in self.conns) - ok0, sum(c.bad for c in self.conns) - bad0
        return meter.result(ok, bad, (self.sent - sent0) / seconds, seconds)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def paced(conns: list[Conn], requests: list[bytes], rate: float, seconds: float, pid: int) -> dict[str, Any]:
    """``requests`` in turn (cycling) offered at ``rate`` a second for ``seconds``."""
    meter = Meter(pid)
    ok0, bad0 = sum(c.ok for c in conns), sum(c.bad for c in conns)
    start, sent, i, k = time.monotonic(), 0, 0, 0
    while (now := time.monotonic()) - start < seconds:
        due = int(rate * (now - start)) - sent
        if due > 0:
            per: list[list[bytes]] = [[] for _ in conns]
            for _ in range(due):
                per[k % len(conns)].append(requests[i])
                i, k = (i + 1) % len(requests), k + 1
            for c, batch in zip(conns, per, strict=True):
                if batch and c.inflight < MAX_INFLIGHT:
                    c.send(batch)
            sent += due
        await asyncio.sleep(TICK_S)
    await asyncio.sleep(0.5)  # the answers still on their way
    return meter.result(sum(c.ok for c in conns) - ok0, sum(c.bad for c in conns) - bad0, sent / seconds, seconds)


# -- documents -----------------------------------------------------------------------------------
def eureka_app(n: int) -> str:
    return f"LOAD-{n % 100:03d}"


def eureka_register(n: int, port: int = 8080, address: str = "10.1.0.1", app: str = "") -> bytes:
    app = app or eureka_app(n)
    doc = {
        "instance": {
            "instanceId": f"i{n}",
            "hostName": address,
            "app": app,
            "ipAddr": address,
            "status": "UP",
            "port": {"$": port, "@enabled": "true"},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"durationInSecs": 90, "renewalIntervalInSecs": 30},
            "metadata": {"version": f"v{n % 2 + 1}"},
            "lastDirtyTimestamp": "1",
        }
    }
    return request("POST", f"/eureka/apps/{app}", json.dumps(doc).encode())


def eureka_renew(n: int) -> bytes:
    return request("PUT", f"/eureka/apps/{eureka_app(n)}/i{n}?status=UP&lastDirtyTimestamp=1")


def nacos_service(n: int) -> str:
    return f"nload-{n % 50:02d}"


def nacos_params(n: int, service: str = "", ip: str = "", port: int = 8080) -> dict[str, str]:
    return {
        "serviceName": service or nacos_service(n),
        "ip": ip or f"10.2.{n // 250}.{n % 250 + 1}",
        "port": str(port),
        "ephemeral": "true",
        "metadata": json.dumps({"version": f"v{n % 2 + 1}"}),
    }


def nacos_register(n: int, service: str = "", ip: str = "", port: int = 8080) -> bytes:
    q = "&".join(f"{k}={quote(v)}" for k, v in nacos_params(n, service, ip, port).items())
    return request("POST", f"/nacos/v1/ns/instance?{q}")


def nacos_beat(n: int) -> bytes:
    p = nacos_params(n)
    beat = json.dumps(
        {
            "serviceName": p["serviceName"],
            "ip": p["ip"],
            "port": 8080,
            "cluster": "DEFAULT",
            "metadata": json.loads(p["metadata"]),
        }
    )
    return request("PUT", f"/nacos/v1/ns/instance/beat?serviceName={p['serviceName']}&beat={quote(beat)}")


# -- the probe: registration to a sidecar's xDS stream --------------------------------------------
class EdsProbe:
    """An ADS stream subscribed to one cluster's EDS, as a sidecar's is; records when addresses appear."""

    def __init__(self, xds_port: int, cluster: str) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{xds_port}")
        self.cluster = cluster
        self.seen: dict[str, float] = {}
        self.out: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.node = base_pb2.Node(id="registry-load-probe", cluster="bench")
        self.node.metadata.update({"sofamesh.outbound_port": 15001})
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _requests(self) -> Any:
        while True:
            yield await self.out.get()

    async def _run(self) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.out.put_nowait(
            discovery_pb2.DiscoveryRequest(node=self.node, type_url=ENDPOINT, resource_names=[self.cluster])
        )
        async for resp in stub.StreamAggregatedResources(self._requests()):
            now = time.monotonic()
            for res in resp.resources:
                cla = endpoint_pb2.ClusterLoadAssignment()
                res.Unpack(cla)
                for group in cla.endpoints:
                    for lb in group.lb_endpoints:
                        self.seen.setdefault(lb.endpoint.address.socket_address.address, now)
            self.out.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    node=self.node,
                    type_url=ENDPOINT,
                    resource_names=[self.cluster],
                    response_nonce=resp.nonce,
                    version_info=resp.version_info,
                )
            )

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self.task
        await self.channel.close()


async def probe(conn: Conn, xds_port: int, samples: int, kind: str) -> dict[str, Any]:
    """``samples`` fresh registrations, one at a time: ms from the API's answer to the EDS update."""
    port = 9999
    eds = EdsProbe(xds_port, f"outbound|{port}|probe-{kind}")
    times: list[float] = []
    try:
        for s in range(samples):
            address = f"127.0.{s // 250 + 1}.{s % 250 + 1}"
            req = (
                eureka_register(s, port, address, app=f"PROBE-{kind.upper()}")
                if kind == "eureka"
                else nacos_register(s, f"probe-{kind}", address, port)
            )
            ok0 = conn.ok
            conn.send([req])
            deadline = time.monotonic() + 10
            while conn.ok == ok0 and time.monotonic() < deadline:
                await asyncio.sleep(0.0005)
            answered = time.monotonic()
            while address not in eds.seen and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            if address in eds.seen:
                times.append((eds.seen[address] - answered) * 1000)
            await asyncio.sleep(0.2)
    finally:
        await eds.close()
    if not times:
        return {"samples": 0}
    return {"samples": len(times), "p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


# -- the run ---------------------------------------------------------------------------------------
# -- Nacos 2 gRPC connections ----------------------------------------------------------------------
def grpc_instance(n: int, service: str = "", ip: str = "", port: int = 8080, kind: str = "registerInstance") -> bytes:
    from sofamesh.plugins.registries.nacos import grpc_wire

    body = {
        "headers": {},
        "requestId": str(n),
        "module": "naming",
        "namespace": "public",
        "serviceName": service or nacos_service(n),
        "groupName": "DEFAULT_GROUP",
        "type": kind,
        "instance": {
            "ip": ip or f"10.3.{n // 250 % 250}.{n % 250 + 1}",
            "port": port,
            "weight": 1.0,
            "healthy": True,
            "enabled": True,
            "ephemeral": True,
            "clusterName": "DEFAULT",
            "metadata": {"version": "v1"},
        },
    }
    return grpc_wire.encode("InstanceRequest", body)


class GrpcConnection:
    """One Nacos 2 client connection: a channel of its own, its stream set up, requests over it."""

    def __init__(self, port: int) -> None:
        from sofamesh.plugins.registries.nacos import grpc_wire

        self.wire = grpc_wire
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        self.unary = self.channel.unary_unary("/Request/request")
        self.out: asyncio.Queue[bytes] = asyncio.Queue()
        self.stream: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def _outgoing(self) -> Any:
        while True:
            yield await self.out.get()

    async def _drain(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            async for _ in self.stream:
                pass

    async def ask(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        kind, body, _ = self.wire.decode(await self.unary(payload, timeout=30))
        return kind, json.loads(body)

    async def open(self) -> None:
        kind, _ = await self.ask(self.wire.encode("ServerCheckRequest", {"headers": {}, "requestId": "0"}))
        if kind != "ServerCheckResponse":
            raise RuntimeError(f"server check answered {kind}")
        self.stream = self.channel.stream_stream("/BiRequestStream/requestBiStream")(self._outgoing())
        self.out.put_nowait(self.wire.encode("ConnectionSetupRequest", {"clientVersion": "bench", "labels": {}}))
        self.reader = asyncio.get_running_loop().create_task(self._drain())

    async def register(self, payload: bytes) -> None:
        for _ in range(200):  # the stream sets up asynchronously: 301 until it has
            kind, body = await self.ask(payload)
            if kind == "InstanceResponse":
                return
            if body.get("errorCode") != 301:
                raise RuntimeError(f"register answered {kind} {body}")
            await asyncio.sleep(0.02)
        raise RuntimeError("the connection never set up")

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.channel.close()


async def grpc_worker(port: int, first: int, count: int) -> None:
    """A child process: ``count`` connections registering instances ``first``..; prints ``ready``, then
    health-checks each connection every 5 s until stdin closes, then prints its totals."""
    health = None
    conns: list[GrpcConnection] = []
    failed = 0

    async def one(n: int) -> None:
        nonlocal failed
        c = GrpcConnection(port)
        try:
            await c.open()
            await c.register(grpc_instance(n))
            conns.append(c)
        except Exception as exc:
            failed += 1
            print(f"connection {n}: {exc}", file=sys.stderr)

    for start in range(first, first + count, 50):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 50, first + count))))
    print(json.dumps({"ready": len(conns), "failed": failed}), flush=True)
    from sofamesh.plugins.registries.nacos import grpc_wire

    health = grpc_wire.encode("HealthCheckRequest", {"headers": {}, "requestId": "h"})
    counts = {"ok": 0, "bad": 0}

    async def beat(c: GrpcConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                kind, _ = await c.ask(health)
                counts["ok" if kind == "HealthCheckResponse" else "bad"] += 1
            except grpc.aio.AioRpcError:
                counts["bad"] += 1
            await asyncio.sleep(5.0)

    tasks = [asyncio.get_running_loop().create_task(beat(c, 5.0 * k / max(1, len(conns)))) for k, c in enumerate(conns)]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for t in tasks:
        t.cancel()
    print(json.dumps(counts), flush=True)
    for c in conns:
        await c.close()


class GrpcFleet:
    """The worker processes, pinned beside this one; their CPU is the generator's."""

    def __init__(self, port: int, total: int, workers: int) -> None:
        per = -(-total // workers)
        self.procs = []
        for w in range(workers):
            first, count = w * per, min(per, total - w * per)
            if count <= 0:
                break
            argv = [sys.executable, __file__, "--grpc-worker", f"{port},{first},{count}"]
            if (os.cpu_count() or 1) >= 2:
                argv = ["taskset", "-c", "1", *argv]
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO))

    def cpu_s(self) -> float:
        return sum(pilot_cpu_s(p.pid) for p in self.procs if p.poll() is None)

    async def ready(self) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        lines = [json.loads(await loop.run_in_executor(None, p.stdout.readline)) for p in self.procs]  # type: ignore[union-attr]
        return {"connected": sum(x["ready"] for x in lines), "failed": sum(x["failed"] for x in lines)}

    async def stop(self) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        out = {"ok": 0, "bad": 0}
        for p in self.procs:
            p.stdin.close()  # type: ignore[union-attr]
        for p in self.procs:
            line = await loop.run_in_executor(None, p.stdout.readline)  # type: ignore[union-attr]
            with contextlib.suppress(ValueError):
                for k, v in json.loads(line).items():
                    out[k] += v
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
            if p.poll() is None:
                p.kill()
        return out


def grpc_phase_result(pid: int, fleet: GrpcFleet, t0: float, pilot0: float, gen0: float, n: int) -> dict[str, Any]:
    wall = time.monotonic() - t0
    pilot, gen = pilot_cpu_s(pid) - pilot0, fleet.cpu_s() - gen0
    per = max(n, 1)
    return {
        "seconds": round(wall, 2),
        "requests": n,
        "pilot_cores": round(pilot / wall, 3),
        "pilot_cpu_us_per_request": round(pilot / per * 1e6),
        "pilot_rss_mb": round(pilot_rss_mb(pid), 1),
        "generator_cores": round(gen / wall, 3),
        "generator_cpu_us_per_request": round(gen / per * 1e6),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }


async def grpc_probe(port: int, xds_port: int, samples: int) -> dict[str, Any]:
    """``samples`` registrations over one gRPC connection: ms from the answer to the EDS update."""
    eds = EdsProbe(xds_port, "outbound|9999|probe-grpc")
    conn = GrpcConnection(port)
    times: list[float] = []
    try:
        await conn.open()
        for s in range(samples):
            address = f"127.2.{s // 250 + 1}.{s % 250 + 1}"
            t0 = time.monotonic()
            await conn.register(grpc_instance(s, "probe-grpc", address, 9999))
            answered = time.monotonic()
            while address not in eds.seen and time.monotonic() < t0 + 10:
                await asyncio.sleep(0.001)
            if address in eds.seen:
                times.append((eds.seen[address] - answered) * 1000)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
        await eds.close()
    if not times:
        return {"samples": 0}
    return {"samples": len(times), "p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


async def grpc_phases(grpc_port: int, xds: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0, pilot0 = time.monotonic(), pilot_cpu_s(pid)
    fleet = GrpcFleet(grpc_port, args.nacos_grpc, args.grpc_workers)
    gen0 = 0.0
    try:
        ready = await fleet.ready()
        out["nacos_grpc_connect_register"] = {
            **ready,
            **grpc_phase_result(pid, fleet, t0, pilot0, gen0, ready["connected"]),
            "rss_mb_before": round(args.rss_before, 1),
        }
        await asyncio.sleep(6)  # every connection has health-checked once: the steady state
        t0, pilot0, gen0 = time.monotonic(), pilot_cpu_s(pid), fleet.cpu_s()
        probe_task = asyncio.get_running_loop().create_task(grpc_probe(grpc_port, xds, args.samples))
        await asyncio.sleep(args.seconds)
        checks = args.nacos_grpc / 5.0 * (time.monotonic() - t0)
        out["nacos_grpc_health_checks"] = grpc_phase_result(pid, fleet, t0, pilot0, gen0, round(checks))
        out["registration_to_xds_nacos_grpc"] = await probe_task
    finally:
        out["nacos_grpc_health_check_answers"] = await fleet.stop()
    return out


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def start_pilot(tmp: Path, eureka_port: int, nacos_port: int) -> tuple[subprocess.Popen[bytes], int, int]:
    """Pilot with ``eureka`` and ``nacos`` (whose gRPC port is ``nacos_port`` + 1000)."""
    xds, api = free_port(), free_port()
    config = {
        "xds": {"address": f"127.0.0.1:{xds}"},
        "api": {"address": f"127.0.0.1:{api}"},
        "data_dir": str(tmp / "data"),
        "registries": [
            {"name": "embedded"},
            {"name": "eureka", "options": {"address": f"127.0.0.1:{eureka_port}"}},
            {"name": "nacos", "options": {"address": f"127.0.0.1:{nacos_port}"}},
        ],
    }
    (tmp / "pilot.json").write_text(json.dumps(config))
    argv = [sys.executable, "-m", "sofamesh", "pilot", "-c", str(tmp / "pilot.json"), "--log-level", "WARNING"]
    if (os.cpu_count() or 1) >= 2:
        argv = ["taskset", "-c", "0", *argv]
    log = (tmp / "pilot.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    import httpx

    for _ in range(600):
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(f"http://127.0.0.1:{api}/ready", timeout=1).status_code == 200
            if ready and all(_listening(p) for p in (eureka_port, nacos_port)):
                return proc, xds, api
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"pilot did not start: {(tmp / 'pilot.log').read_text()[-2000:]}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of connections, here and in Pilot
    eureka_port, nacos_port = free_port(), nacos_port_pair()
    with tempfile.TemporaryDirectory(prefix="registry-load-") as d:
        proc, xds, _api = start_pilot(Path(d), eureka_port, nacos_port)
        out: dict[str, Any] = {"eureka_instances": args.eureka, "nacos_instances": args.nacos}
        try:
            eu = await connect(eureka_port, args.connections)
            out["eureka_register"] = await flood(eu, [eureka_register(n) for n in range(args.eureka)], proc.pid)
            renewals = [eureka_renew(n) for n in range(args.eureka)]
            probe_eu = await connect(eureka_port, 1)
            for k, rate in enumerate(args.rates):
                load = asyncio.get_running_loop().create_task(paced(eu, renewals, rate, args.seconds, proc.pid))
                if k == 0:  # registrations while 10k instances renew
                    await asyncio.sleep(1)
                    out["registration_to_xds_eureka"] = await probe(probe_eu[0], xds, args.samples, "eureka")
                out[f"eureka_renew_{rate}"] = await load
            for c in [*eu, *probe_eu]:
                await c.close()
            if args.nacos:
                na = await connect(nacos_port, args.connections)
                fleet = BeatFleet(na, [nacos_beat(n) for n in range(args.nacos)])
                regs = [nacos_register(n) for n in range(args.nacos)]
                out["nacos_register"] = await flood(na, regs, proc.pid, sent=fleet.add)
                rate = args.nacos / 5.0
                await asyncio.sleep(fleet.interval_s)  # every instance has beaten once: the steady state
                load = asyncio.get_running_loop().create_task(fleet.measure(args.seconds, proc.pid))
                probe_na = await connect(nacos_port, 1)
                await asyncio.sleep(1)
                out["registration_to_xds_nacos"] = await probe(probe_na[0], xds, args.samples, "nacos")
                out[f"nacos_beat_{round(rate)}"] = await load
                await fleet.close()
                for c in [*na, *probe_na]:
                    await c.close()
            if args.nacos_grpc:
                args.rss_before = pilot_rss_mb(proc.pid)
                out.update(await grpc_phases(nacos_port + 1000, xds, proc.pid, args))
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
    return out


def nacos_port_pair() -> int:
    """A free port whose + 1000 (the Nacos gRPC port) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 1000 <= 65535:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port + 1000)) != 0:
                    return port
    raise SystemExit("no free port pair")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--grpc-worker":
        port, first, count = (int(x) for x in sys.argv[2].split(","))
        asyncio.run(grpc_worker(port, first, count))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--eureka", type=int, default=10000)
    ap.add_argument("--rates", default="333", help="renewals a second, comma-separated")
    ap.add_argument("--nacos", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--nacos-grpc", type=int, default=5000, help="Nacos 2 gRPC connections (0: none)")
    ap.add_argument("--grpc-workers", type=int, default=5, help="processes opening them")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.rates = [int(r) for r in str(args.rates).split(",") if r]
    out = asyncio.run(run(args))
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
