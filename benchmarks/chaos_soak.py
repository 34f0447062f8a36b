"""Chaos soak: the demo mesh under steady mixed load while its parts are killed and restarted.

usage: python benchmarks/chaos_soak.py [--minutes M] [--interval S] [--down S] [--store embedded|etcd|zookeeper]

Brings up the mesh of ``sofamesh demo`` (sofamesh/demo.py: the same providers, the same Pilot
settings with its embedded registry, two sidecars configured over xDS), but every part runs in a
process of its own so it can be killed: Pilot (``sofamesh pilot``), three providers per protocol
(Bolt, Dubbo, HTTP, gRPC; ``--role provider`` below runs demo.Provider) and two sidecars
(``sofamesh proxy``). The demo's callers (its Bolt / Dubbo / HTTP clients and the grpcio client)
call every service by name through both sidecars at a steady pace. A VirtualService gives HTTP and
gRPC retries, a MetaRouter gives Bolt and Dubbo retries on connect failures and resets (the demo's
echo calls are idempotent: docs/policy.md, "RPC retries"), a DestinationRule gives every service
outlier detection.

On a schedule, one at a time, with SIGKILL and a restart ``--down`` seconds later: provider 2 of each
protocol (still registered: a crash), Pilot, sidecar 2, and with ``--store etcd|zookeeper`` (first) the
store itself: Pilot's writable registry and config store then live in a real etcd / ZooKeeper
server this script runs (Pilot replicas' layout, docs/pilot.md), and that server is killed and
restarted on its data directory too. With the default ``--store embedded`` the registry is in
Pilot, so killing Pilot is the store's outage. A fault proxy of our own (asyncio TCP, below)
sits in front of HTTP provider 1: in latency windows it delays every chunk, and it resets (RST) every
connection through it on a schedule. Meanwhile a writer registers one instance a second into the
``soak-ledger`` service; every acknowledged write must be in the registry at the end, as must every
provider instance.

Callers behave as their RPC frameworks do by default after a failed call (the mesh cannot answer
a call its caller's own sidecar took with it when it was killed; in production the application's
framework decides what happens to it):

- Dubbo: the consumer's default cluster, ``failover``, with ``retries=2``: a call that failed for
  any reason but a business exception (the provider's own exception) is invoked again at once, up to
  twice (apache/dubbo ``FailoverClusterInvoker``; ``CommonConstants.DEFAULT_RETRIES = 2``;
  dubbo.apache.org, "Fault Tolerance Strategy": "retries=2 (excluding the first time)").
- SOFA RPC (Bolt): ``ConsumerConfig.retries`` is 0 (sofastack-doc sofa-rpc "Configuration-Common";
  help.aliyun.com/document_detail/149913: "By default, the number of retries is zero"): no retry.
- HTTP: a pooled client retries an idempotent request (GET) whose connection failed or was reset
  before any response byte: urllib3's ``Retry.DEFAULT = Retry(3)`` retries connect errors and, for
  the methods in ``DEFAULT_ALLOWED_METHODS``, read errors (``ProtocolError``: "Connection aborted"),
  with no backoff before the first retry; OkHttp's ``retryOnConnectionFailure`` (true by default)
  recovers from stale pooled connections the same way. Timeouts are not retried (urllib3 has no read
  timeout by default; OkHttp does not retry a read timeout once the request was sent).
- gRPC: grpcio as it is (the demo's caller is grpcio): its transparent retry resends a call that
  never left the client or that the server refused unprocessed (GOAWAY, REFUSED_STREAM; grpc.io
  "Retry" guide, gRFC A6); a call in flight on a connection that died is not retried.

A retry connects anew; a retry refused because the sidecar is still down is a failed attempt, as
it is for those frameworks.

Reports per protocol: requests sent (calls whose first attempt left the caller), answered, failed
(an error answer) and lost (no answer: a reset or a timeout) after the caller's retries, and unsent
(the caller's own sidecar was down: the first connection was refused); of the failed and lost, "cut"
counts the calls the caller's own sidecar took with it: sent before that sidecar was gone (reaped)
and failing after its SIGKILL (in flight there, or written into its socket while the kernel tore the
process down). Beside them, the same figures without caller retries (each call's first attempt),
the calls retried and those a retry answered, so nothing the retries do is hidden. Then every
failed or lost call by the event it followed (the latest kill or restart, a fault proxy reset
within 1 s) and the caller's sidecar. Callers reconnect before a call when their sidecar closed the
connection while they were idle, as SOFA RPC's and Dubbo's Netty channels and pooled HTTP clients do.

Verdict: OK when the calls failed or lost after the callers' default retries are at most 0.01 % of
the calls sent, and every provider instance and acknowledged write is in the registry. The rule
counts what an application sees: a call its framework recovered is not a failure to it, and a call
its framework gave up on is one, whatever the cause (cut calls included). Exits 1 otherwise.
Every process it started is stopped (by its pid's process group) whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sofamesh import demo
from sofamesh.testing import free_port

GOAL = 0.0001  # failed + lost per sent request
PROTOCOLS = ("bolt", "dubbo", "http", "grpc")
PACE_S = 0.02  # each caller's pause between calls
CALLERS_PER_SIDECAR = 2
LEDGER = "soak-ledger"
FAULTY = "http-1"  # the provider behind the fault proxy

RPC_RETRIES = """\
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: {name}-retries}}
spec:
  hosts: ["{host}"]
  routes:
  - route: [{{destination: {{host: "{host}"}}}}]
    retries: {{attempts: 2, perTryTimeout: 2s, retryOn: "connect-failure,reset"}}
"""
RETRIES = """\
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: {host}-retries}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {host}}}}}]
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: "{on}"}}
"""
POLICY = (
    RETRIES.format(host="hello", on="connect-failure,refused-stream,reset,gateway-error")
    + RETRIES.format(host="greeter", on="connect-failure,refused-stream,reset,unavailable,cancelled")
    + "".join(RPC_RETRIES.format(name=p, host=demo.SERVICES[p]) for p in ("bolt", "dubbo"))
)
OUTLIER = """\
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: {name}-outlier}}
spec:
  host: "{host}"
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 34}}
"""


# -- child processes ---------------------------------------------------------------------------------
class Child:
    """One process this script started (its own session, so its group is its pid); kill and restart."""

    def __init__(self, name: str, argv: list[str], ready_port: int, logs: Path) -> None:
        self.name, self.argv, self.ready_port = name, argv, ready_port
        self.log = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    async def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]  # the directory goes unless --keep
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log ends:\n{tail}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.ready_port)
                w.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} did not listen on {self.ready_port} in {timeout} s") from None
                await asyncio.sleep(0.1)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.kills += 1
        if self.proc is not None:
            await asyncio.to_thread(self.proc.wait, 10)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 5)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait, 5)


# -- the fault proxy ---------------------------------------------------------------------------------
class FaultProxy:
    """A TCP proxy in front of one provider: ``latency_s`` delay per chunk while ``slow`` is set, and
    ``reset_all()`` aborts every connection through it with an RST (SO_LINGER 0)."""

    def __init__(self, upstream: int, latency_s: float = 0.03) -> None:
        self.port = free_port()
        self.upstream = upstream
        self.latency_s = latency_s
        self.slow = False
        self.resets = 0
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):  # RuntimeError: reset meanwhile
            while data := await r.read(65536):
                if self.slow:
                    await asyncio.sleep(self.latency_s)
                w.write(data)
                await w.drain()
        w.close()

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            _rst(cw)
            return
        pair = (cw, uw)
        self.pairs.add(pair)
        try:
            await asyncio.gather(self._pump(cr, uw), self._pump(ur, cw))
        finally:
            self.pairs.discard(pair)

    def reset_all(self) -> None:
        for cw, uw in list(self.pairs):
            _rst(cw)
            _rst(uw)
            self.resets += 1

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.reset_all()


def _rst(w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


# -- load --------------------------------------------------------------------------------------------
@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    lost: int = 0
    cut: int = 0  # of the failed + lost: in flight on the caller's own sidecar when it was killed
    unsent: int = 0
    # the same calls judged by their first attempt alone (what they would be without caller retries)
    first_failed: int = 0
    first_lost: int = 0
    first_cut: int = 0
    retried: int = 0  # calls whose framework tried again
    rescued: int = 0  # of those, answered by a retry
    samples: dict[str, list[str]] = field(default_factory=lambda: {"failed": [], "lost": []})
    # (the event the failure followed, "cut" / "failed" / "lost", the caller's sidecar) -> calls
    by_event: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def note(self, kind: str, exc: BaseException) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind in self.samples and len(self.samples[kind]) < 20:
            self.samples[kind].append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}"[:200])


class Timeline:
    """What the chaos did and when (monotonic), to tell which event each failed call followed: the
    latest kill / restart, and a fault proxy reset when one came in the last second."""

    BUCKETS = (0.1, 1.0, 3.0, 10.0)

    def __init__(self) -> None:
        self.marks: list[tuple[float, str]] = []
        self.resets: list[float] = []

    def mark(self, what: str) -> None:
        self.marks.append((time.monotonic(), what))

    def reset(self) -> None:
        self.resets.append(time.monotonic())

    def before(self, t: float) -> str:
        """``kill -9 sidecar-2 <1 s``: the latest event at or before ``t`` and how long before."""
        label = "no event"
        for at, what in reversed(self.marks):
            if at <= t:
                bucket = next((b for b in self.BUCKETS if t - at < b), None)
                label = f"{what} <{bucket:g} s" if bucket is not None else label
                break
        if any(t - 1.0 <= r <= t for r in self.resets[-3:]):
            label += f", {FAULTY} fault proxy reset <1 s"
        return label


def _classify(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "unsent"
    try:
        import grpc
    except ImportError:  # pragma: no cover
        grpc = None
    if grpc is not None and isinstance(exc, grpc.aio.AioRpcError):
        # only a refused connect left nothing sent: "Connection reset by peer" / "Socket closed" is a
        # call lost in flight ("connect" alone would match "Connection reset")
        details = str(exc.details() or "").lower()
        if exc.code() == grpc.StatusCode.UNAVAILABLE and ("failed to connect" in details or "refused" in details):
            return "unsent"
        if exc.code() == grpc.StatusCode.UNAVAILABLE and ("reset" in details or "closed" in details):
            return "lost"  # the connection died with the call in flight: no answer, as an HTTP reset
        return "lost" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "failed"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError, OSError)):
        return "lost"
    return "failed"


# Retries after the first attempt, by each caller's framework default (the module docstring).
CALLER_RETRIES = {"bolt": 0, "dubbo": 2, "http": 3, "grpc": 0}


def _retried(proto: str, exc: BaseException, response_started: bool) -> bool:
    """Whether the caller's framework tries a failed call again (its attempts left aside).

    Dubbo's failover retries every failure but a business exception (the provider threw: answered
    with status OK and an exception value; the demo's echo throws none). Pooled HTTP clients retry
    a GET whose connection was refused, reset or closed before any response byte, not a timeout.
    SOFA RPC (0 retries) and grpcio (its transparent retry is inside the channel) never do here."""
    if proto == "dubbo":
        return not (isinstance(exc, RuntimeError) and str(exc).startswith("dubbo: not a value"))
    if proto == "http":
        return isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and not response_started
    return False


async def _close(proto: str, client: Any) -> None:
    client.close()
    if proto == "grpc":
        await client.aclose()


async def _call(proto: str, address: str, client: Any) -> tuple[Any, list[BaseException], bool]:
    """One call as the caller's framework makes it: the first attempt on ``client``, then the
    framework's retries (``CALLER_RETRIES``, ``_retried``), each on a new connection. Returns the
    client to go on with, the failures of its attempts in order, and whether an attempt was
    answered (the last one)."""
    failures: list[BaseException] = []
    while True:
        try:
            await client.call()
            return client, failures, True
        except Exception as exc:  # every failure is judged by the framework's rule
            failures.append(exc)
            started = bool(getattr(client, "response_started", False))
            await _close(proto, client)
            client = _client(proto, address)
            if len(failures) > CALLER_RETRIES[proto] or not _retried(proto, exc, started):
                return client, failures, False


def _client(proto: str, address: str) -> Any:
    if proto == "bolt" or proto == "dubbo":
        return demo.RpcClient(proto, address)
    if proto == "http":
        return demo.HttpClient(address)
    return demo.GrpcClient(address)


def _dropped(client: Any) -> bool:
    """The client's connection was closed by the sidecar while idle (it read the FIN). As real
    clients do before reusing a connection (SOFA RPC's and Dubbo's Netty channels go inactive and
    leave the pool, urllib3 checks ``is_connection_dropped``), the caller then connects anew."""
    reader = getattr(client, "reader", None)
    writer = getattr(client, "writer", None)
    return writer is not None and (writer.is_closing() or (reader is not None and reader.at_eof()))


def _was_cut(started: float, failed: float, killed: tuple[float, float]) -> bool:
    """A call sent at ``started`` that failed at ``failed`` was cut by its own sidecar's kill
    (``killed``: SIGKILL sent, process reaped; reaped < sent while the reaping is awaited): it
    failed after the SIGKILL and was sent before the process was gone."""
    signalled, reaped = killed
    return signalled <= failed and started <= (reaped if reaped >= signalled else math.inf)


async def _caller(
    proto: str,
    address: str,
    tally: Tally,
    stop: asyncio.Event,
    killed: dict[str, tuple[float, float]],
    timeline: Timeline,
) -> None:
    """Calls through the sidecar at ``address``; ``killed[address]``: when that sidecar was last sent
    SIGKILL and when it was reaped (gone: its sockets closed). A call that fails after that SIGKILL and
    was sent before the reaping was in flight in the killed sidecar, or written into its socket
    while the kernel tore it down: "cut"."""
    client = _client(proto, address)
    sidecar = f"sidecar-{1 + int(address in killed)}"  # only sidecar 2 is ever killed (``cut_on``)
    while not stop.is_set():
        if proto != "grpc" and _dropped(client):
            client.close()
            client = _client(proto, address)
        if proto != "grpc" and client.writer is None:  # connect first: a refusal is not a sent request
            try:
                host, port = address.rsplit(":", 1)
                client.reader, client.writer = await asyncio.open_connection(host, int(port))
            except OSError as exc:
                tally.note("unsent", exc)
                await asyncio.sleep(0.2)
                continue
        tally.sent += 1
        started = time.monotonic()
        client, failures, answered = await _call(proto, address, client)
        if not failures:
            tally.ok += 1
            await asyncio.sleep(PACE_S)
            continue
        now = time.monotonic()
        first = _classify(failures[0])
        if first == "unsent":  # the first attempt never left the caller (gRPC: refused connect)
            tally.sent -= 1
            tally.note("unsent", failures[0])
            await asyncio.sleep(0.2)
            continue
        cut_window = killed.get(address, (math.inf, math.inf))
        setattr(tally, f"first_{first}", getattr(tally, f"first_{first}") + 1)
        tally.first_cut += _was_cut(started, now, cut_window)
        tally.retried += len(failures) > 1
        if answered:
            tally.rescued += 1
            tally.ok += 1
            await asyncio.sleep(PACE_S)
            continue
        # failed after the framework's retries: the last attempt that left the caller says how
        kind = next((k for k in map(_classify, reversed(failures)) if k != "unsent"), first)
        cut = _was_cut(started, now, cut_window)
        tally.cut += cut
        tally.by_event[(timeline.before(now), "cut" if cut else kind, sidecar)] += 1
        tally.note(kind, failures[-1])
        await asyncio.sleep(0.01)
    client.close()
    if proto == "grpc":
        await client.aclose()


# -- the soak ----------------------------------------------------------------------------------------
async def _http(method: str, url: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
        s.request(method, url, json=body) as r,
    ):
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def _soak(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sofamesh-soak-"))
    logs = tmp / "logs"
    logs.mkdir()
    me = [sys.executable, str(Path(__file__).resolve())]
    cli = [sys.executable, "-m", "sofamesh"]
    xds_port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    children: list[Child] = []
    pilot_doc: dict[str, Any] = {
        "xds": {"address": f"127.0.0.1:{xds_port}"},
        "api": {"address": f"127.0.0.1:{api_port}"},
        "data_dir": str(tmp / "pilot-data"),
        "debounce": {"quiet_ms": 20, "max_delay_ms": 200},
        "grace_s": 0.2,
    }
    store = None if args.store == "embedded" else _store(args.store, tmp / args.store, logs)
    if store is not None:
        children.append(store[0])
        pilot_doc.update(store[1])
    pilot_conf = tmp / "pilot.json"
    pilot_conf.write_text(json.dumps(pilot_doc))
    (tmp / "pilot-data").mkdir()
    pilot = Child("pilot", [*cli, "pilot", "-c", str(pilot_conf), "--log-level", "WARNING"], api_port, logs)
    children.append(pilot)
    providers: dict[str, Child] = {}
    ports: dict[str, int] = {}
    for proto in PROTOCOLS:
        for i in (1, 2, 3):
            name = f"{proto}-{i}"
            ports[name] = free_port()
            providers[name] = Child(
                name,
                [*me, "--role", "provider", "--protocol", proto, "--name", name, "--port", str(ports[name])],
                ports[name],
                logs,
            )
    children += providers.values()
    sidecars: list[Child] = []
    egress: dict[str, list[str]] = {p: [] for p in PROTOCOLS}
    for i in (1, 2):
        eg = {"outbound": free_port(), "bolt": free_port(), "dubbo": free_port()}
        conf = tmp / f"sidecar-{i}.json"
        conf.write_text(
            json.dumps(
                {
                    "admin": {"address": f"127.0.0.1:{free_port()}"},
                    "drain_timeout_ms": 1000,
                    "xds": {
                        "address": f"127.0.0.1:{xds_port}",
                        "node_id": f"soak-app-{i}",
                        "cluster": f"soak-app-{i}",
                        "initial_fetch_timeout_ms": 10_000,
                        "metadata": {f"sofamesh.{k}_port": v for k, v in eg.items()},
                    },
                }
            )
        )
        sidecars.append(Child(f"sidecar-{i}", [*cli, "proxy", "-c", str(conf)], eg["outbound"], logs))
        for proto, key in (("bolt", "bolt"), ("dubbo", "dubbo"), ("http", "outbound"), ("grpc", "outbound")):
            egress[proto].append(f"127.0.0.1:{eg[key]}")
    children += sidecars
    fault = FaultProxy(ports[FAULTY])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    killed: dict[str, tuple[float, float]] = {}  # sidecar egress address -> when it was last killed, reaped
    try:
        if store is not None:
            await store[0].start(timeout=60)
        await pilot.start()
        for p in providers.values():
            await p.start()
        await fault.start()
        expected: dict[str, set[str]] = {}
        for name in providers:
            proto = name.split("-")[0]
            service = demo.SERVICES[proto]
            port = fault.port if name == FAULTY else ports[name]
            status, body = await _http(
                "PUT",
                f"{api}/v1/services/{service}/instances/{name}",
                {
                    "address": "127.0.0.1",
                    "port": port,
                    "protocol": proto,
                    "version": "1.0.0" if proto == "dubbo" else "",
                },
            )
            if status != 200:
                raise RuntimeError(f"registering {name}: {status} {body}")
            expected.setdefault(service, set()).add(name)
        policy = tmp / "policy.yaml"
        policy.write_text(
            POLICY + "".join(OUTLIER.format(name=f"p{i}", host=demo.SERVICES[p]) for i, p in enumerate(PROTOCOLS))
        )
        applied = subprocess.run(
            [*cli, "apply", "-f", str(policy), "--pilot", api], capture_output=True, text=True, timeout=60
        )
        if applied.returncode != 0:
            raise RuntimeError(f"sofamesh apply: {applied.stdout} {applied.stderr}")
        for sc in sidecars:
            await sc.start()
        await _warm_up(egress)
        print(
            f"soak: mesh up in {time.monotonic() - t0:.1f} s (logs in {logs}); load for {args.minutes} min", flush=True
        )
        tallies = {p: Tally() for p in PROTOCOLS}
        timeline = Timeline()
        for address in egress["bolt"][1:] + egress["dubbo"][1:] + egress["http"][1:]:
            killed.setdefault(address, (math.inf, math.inf))  # marks sidecar 2's addresses (``_caller``)
        tasks = [
            loop.create_task(_caller(proto, address, tallies[proto], stop, killed, timeline))
            for proto in PROTOCOLS
            for address in egress[proto]
            for _ in range(CALLERS_PER_SIDECAR)
        ]
        acked: set[str] = set()
        writes = {"attempted": 0, "acked": 0}
        events: list[str] = []
        order = [*([store[0]] if store is not None else []), providers["bolt-2"], providers["dubbo-2"], pilot]
        order += [providers["http-2"], providers["grpc-2"], sidecars[1]]
        cut_on = {sidecars[1].name: [a for p in PROTOCOLS for a in egress[p][1:]]}
        chaos = [
            loop.create_task(_schedule(args, stop, order, events, killed, cut_on, timeline)),
            loop.create_task(_faults(fault, stop, timeline)),
            loop.create_task(_writer(api, stop, acked, writes)),
        ]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.minutes * 60)
        stop.set()
        await asyncio.wait(chaos, timeout=60)
        await asyncio.wait(tasks, timeout=15)
        # The registry after the soak: every provider instance and every acknowledged write.
        for child in children:  # anything the schedule left down comes back before the check
            if child.proc is not None and child.proc.poll() is not None:
                await child.start()
        missing = await _missing(api, [*expected.items(), (LEDGER, acked)])
        return _report(tallies, writes, missing, events, fault, time.monotonic() - t0, args.store)
    finally:
        stop.set()
        await fault.stop()
        for child in reversed(children):
            await child.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


SETTLE_S = 15.0  # a registry read through a store's watch (etcd, ZooKeeper) may trail its write


async def _missing(api: str, wanted: list[tuple[str, set[str]]]) -> list[str]:
    """What of ``wanted`` (service, instance ids) Pilot's registry lacks. Pilot's model follows an
    etcd / ZooKeeper store through its watch, so an acknowledged write may show a moment later: asked
    again for up to ``SETTLE_S`` before anything counts as missing."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        missing: list[str] = []
        for service, names in wanted:
            try:
                _status, body = await _http("GET", f"{api}/v1/services/{service}/instances")
            except Exception:  # Pilot restarting: ask again
                body = None
            have = {i.get("id") for i in body.get("instances", [])} if isinstance(body, dict) else set()
            missing += [f"{service}/{n}" for n in sorted(names - have)]
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.5)


async def _warm_up(egress: dict[str, list[str]]) -> None:
    """Until one call of every protocol through every sidecar succeeds (bounded)."""
    for proto in PROTOCOLS:
        for address in egress[proto]:
            deadline = time.monotonic() + 30
            while True:
                client = _client(proto, address)
                try:
                    await client.call()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
                finally:
                    client.close()
                    if proto == "grpc":
                        await client.aclose()


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopped; True when stopped."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _schedule(
    args: argparse.Namespace,
    stop: asyncio.Event,
    order: list[Child],
    events: list[str],
    killed: dict[str, tuple[float, float]],
    cut_on: dict[str, list[str]],
    timeline: Timeline,
) -> None:
    """SIGKILL one part of ``order`` at a time, ``--interval`` apart, and restart it ``--down`` s later.
    Killing a sidecar notes, for its callers' addresses (``cut_on``), when it was sent SIGKILL and
    when it was reaped, in ``killed``."""
    n = 0
    while not await _sleep(stop, args.interval):
        child = order[n % len(order)]
        n += 1
        at = time.strftime("%H:%M:%S")
        addresses = cut_on.get(child.name, [])
        signalled = time.monotonic()
        for address in addresses:
            killed[address] = (signalled, -math.inf)
        timeline.mark(f"kill -9 {child.name}")
        await child.kill()
        for address in addresses:
            killed[address] = (signalled, time.monotonic())
        await _sleep(stop, args.down)  # restarted even when stopped: the registry check needs Pilot
        t = time.monotonic()
        timeline.mark(f"restart {child.name}")
        await child.start()
        timeline.mark(f"{child.name} back")
        events.append(f"{at} kill -9 {child.name}, restarted after {args.down:.0f} s (+{time.monotonic() - t:.1f} s)")


async def _faults(fault: FaultProxy, stop: asyncio.Event, timeline: Timeline) -> None:
    """Every 10 s: 3 s of added latency; a reset of every connection every 4 s."""
    tick = 0
    while not await _sleep(stop, 1.0):
        tick += 1
        fault.slow = tick % 10 < 3
        if tick % 4 == 0:
            fault.reset_all()
            timeline.reset()


async def _writer(api: str, stop: asyncio.Event, acked: set[str], writes: dict[str, int]) -> None:
    """One registration a second into the ledger service; those answered 200 must survive."""
    n = 0
    while not await _sleep(stop, 1.0):
        n += 1
        name = f"w-{n}"
        writes["attempted"] += 1
        try:
            status, _ = await _http(
                "PUT",
                f"{api}/v1/services/{LEDGER}/instances/{name}",
                {"address": "127.0.0.1", "port": 9, "protocol": "http"},
                timeout=3,
            )
        except Exception:
            continue
        if status == 200:
            acked.add(name)
            writes["acked"] += 1


def _report(
    tallies: dict[str, Tally],
    writes: dict[str, int],
    missing: list[str],
    events: list[str],
    fault: FaultProxy,
    elapsed: float,
    store: str,
) -> int:
    print(f"\nsoak: {elapsed:.0f} s; store {store}; {len(events)} kills; fault proxy resets {fault.resets} connections")
    for e in events:
        print(f"  {e}")
    print(f"\n{'protocol':<8}{'sent':>10}{'answered':>10}{'failed':>8}{'lost':>8}{'(cut)':>8}{'unsent':>8}{'rate':>10}")
    bad_total = sent_total = cut_total = 0
    for proto, t in tallies.items():
        bad = t.failed + t.lost
        bad_total += bad
        cut_total += t.cut
        sent_total += t.sent
        rate = bad / t.sent * 100 if t.sent else 0.0
        print(f"{proto:<8}{t.sent:>10}{t.ok:>10}{t.failed:>8}{t.lost:>8}{t.cut:>8}{t.unsent:>8}{rate:>9.4f}%")
    rate = bad_total / sent_total if sent_total else 1.0
    print(
        f"{'all':<8}{sent_total:>10}{'':>10}{'':>8}{bad_total:>8}{cut_total:>8}{'':>8}{rate * 100:>9.4f}%"
        f"  (goal <= 0.0100 %)"
    )
    if sent_total:
        print(
            f"  after the callers' default retries; of which cut by the killed local sidecar (sent before it was gone, no answer after its SIGKILL): "
            f"{cut_total} = "
            f"{cut_total / sent_total * 100:.4f} %; every other failure: {bad_total - cut_total} = "
            f"{(bad_total - cut_total) / sent_total * 100:.4f} %"
        )
    print(
        f"\nwithout caller retries (each call's first attempt; retries by framework default):\n"
        f"{'protocol':<8}{'retries':>8}{'failed':>8}{'lost':>8}{'(cut)':>8}{'rate':>10}{'retried':>9}{'rescued':>9}"
    )
    first_total = first_cut_total = 0
    for proto, t in tallies.items():
        first = t.first_failed + t.first_lost
        first_total += first
        first_cut_total += t.first_cut
        rate1 = first / t.sent * 100 if t.sent else 0.0
        print(
            f"{proto:<8}{CALLER_RETRIES[proto]:>8}{t.first_failed:>8}{t.first_lost:>8}{t.first_cut:>8}"
            f"{rate1:>9.4f}%{t.retried:>9}{t.rescued:>9}"
        )
    if sent_total:
        print(
            f"{'all':<8}{'':>8}{'':>8}{first_total:>8}{first_cut_total:>8}{first_total / sent_total * 100:>9.4f}%"
            f"{sum(t.retried for t in tallies.values()):>9}{sum(t.rescued for t in tallies.values()):>9}"
        )
    print("\nfailed and lost calls by the event they followed (protocol, caller's sidecar, kind, calls, event):")
    for proto, t in tallies.items():
        for (event, kind, sidecar), n in sorted(t.by_event.items()):
            print(f"  {proto:<6}{sidecar:<11}{kind:<7}{n:>6}  {event}")
    for proto, t in tallies.items():
        for kind, samples in t.samples.items():
            for s in samples[:5]:
                print(f"  {proto} {kind}: {s}")
    print(
        f"\nregistry: {writes['acked']} of {writes['attempted']} ledger writes acknowledged; "
        f"missing after the soak: {missing or 'none'}"
    )
    ok = rate <= GOAL and not missing and sent_total > 0
    print(f"verdict: {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


# -- the store ---------------------------------------------------------------------------------------
ZK_JARS = (
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-simple.jar",
)  # scripts/setup.d/35-registry-servers.sh


def _store(kind: str, workdir: Path, logs: Path) -> tuple[Child, dict[str, Any]]:
    """An etcd or ZooKeeper server (restarted on its own data directory after a kill) and the Pilot
    settings that keep registrations and policy in it, as Pilot replicas share one (docs/pilot.md)."""
    workdir.mkdir(parents=True)
    port = free_port()
    if kind == "etcd":
        endpoint, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{free_port()}"
        argv = [
            "etcd",
            "--name",
            "soak",
            "--data-dir",
            str(workdir / "data"),
            "--listen-client-urls",
            endpoint,
            "--advertise-client-urls",
            endpoint,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"soak={peer}",
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
        ]
        settings = {
            "registries": [
                {
                    "name": "mesh",
                    "type": "etcd",
                    "writable": True,
                    "options": {"endpoint": endpoint, "prefix": "/soak/registry/", "leases": "instance"},
                }
            ],
            "config_store": {"type": "etcd", "options": {"endpoint": endpoint, "prefix": "/soak/policy/"}},
        }
        return Child("etcd", argv, port, logs), settings
    (workdir / "data").mkdir()
    (workdir / "zoo.cfg").write_text(
        f"tickTime=500\ndataDir={workdir / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "maxClientCnxns=0\nadmin.enableServer=false\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n"
    )
    argv = [
        "java",
        "-Xms32m",
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        ":".join(ZK_JARS),
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        str(workdir / "zoo.cfg"),
    ]
    hosts = f"127.0.0.1:{port}"
    settings = {
        "registries": [
            {
                "name": "mesh",
                "type": "zookeeper",
                "writable": True,
                "options": {"hosts": hosts, "layout": "sofa", "root": "/soak", "registrations": "persistent"},
            }
        ],
        "config_store": {"type": "zookeeper", "options": {"hosts": hosts, "root": "/soak-policy"}},
    }
    return Child("zookeeper", argv, port, logs), settings


# -- a provider process ------------------------------------------------------------------------------
async def _provider(args: argparse.Namespace) -> None:
    p = demo.Provider(args.protocol, 0)
    p.name, p.port, p.address = args.name, args.port, f"127.0.0.1:{args.port}"
    await p.start()
    await asyncio.Event().wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    ap.add_argument("--interval", type=float, default=15.0, help="seconds between kills (default 15)")
    ap.add_argument("--down", type=float, default=3.0, help="seconds a killed part stays down (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument(
        "--store",
        choices=("embedded", "etcd", "zookeeper"),
        default="embedded",
        help="where Pilot keeps registrations and policy; etcd / zookeeper: a server this script runs and kills too",
    )
    ap.add_argument("--role", choices=("soak", "provider"), default="soak", help=argparse.SUPPRESS)
    ap.add_argument("--protocol", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from sofamesh.core.net import loop as loop_mod

    if args.role == "provider":
        loop_mod.run(_provider(args))
        return 0
    return int(loop_mod.run(_soak(args)))


if __name__ == "__main__":
    sys.exit(main())
