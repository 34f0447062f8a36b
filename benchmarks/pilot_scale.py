"""Pilot at scale: S services x I instances, N simulated ADS clients (Envoy-like subscriptions).

Runs Pilot (`python -m sofamesh pilot`) as a child process on free ports with a pre-filled embedded
store, connects N ADS streams from this process (grpc.aio), and measures:
- initial sync: time until every client has CDS, EDS (every cluster), LDS and RDS;
- push after one instance is added (EDS of one cluster changes);
- push after one service is added (CDS, EDS, RDS change for every client);
- policy pushes (``--policy``): a DestinationRule with two subsets of one service (CDS changes),
  then a VirtualService splitting it 80/20 and a change of its weights (RDS alone changes): the
  time from the API's answer until every client has the change, and which types were re-sent;
plus Pilot's CPU seconds for each phase and its RSS (from /proc).

    .venv/bin/python benchmarks/pilot_scale.py --services 1000 --instances 2 --clients 200 [--delta] [--per-process 250]

``--mixed`` runs half the clients state-of-the-world and half delta (Istio's load: sidecars of both
kinds); a stream that fails is counted by status code and retried after 1 s, as Envoy does.
``--go`` simulates the clients with ``benchmarks/adsload`` (Go, grpc-go; built on first use into
``$SOFAMESH_CACHE/bench``, Debian ``golang-go`` and ``golang-google-grpc-dev``) instead of grpc.aio
processes, so that the load generator is not the limit: its CPU is reported beside Pilot's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT, LISTENER, ROUTE
from sofamesh.testing import free_port

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
CACHE = Path(os.environ.get("SOFAMESH_CACHE") or REPO / ".cache")
ADSLOAD = REPO / "benchmarks" / "adsload" / "main.go"


def build_adsload() -> Path:
    """The Go client, named by its source's hash (checkouts sharing one cache each get their own)."""
    binary = CACHE / "bench" / f"adsload-{hashlib.sha256(ADSLOAD.read_bytes()).hexdigest()[:12]}"
    if binary.exists():
        return binary
    if not Path("/usr/share/gocode/src/google.golang.org/grpc").is_dir() or not shutil.which("go"):
        raise SystemExit("--go needs Debian's golang-go and golang-google-grpc-dev (apt-get install them)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode",
           "GOCACHE": str(CACHE / "bench" / "gocache")}
    tmp = binary.with_name(f"{binary.name}.tmp.{os.getpid()}")
    subprocess.run(["go", "build", "-o", str(tmp), str(ADSLOAD)], check=True, env=env)
    tmp.rename(binary)
    return binary


def pilot_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pilot_rss_mb(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def write_store(data_dir: Path, services: int, instances: int) -> None:
    """The embedded registry's file format (format 1), written directly to skip S*I API calls."""
    svcs, insts = [], []
    for s in range(services):
        name = f"svc-{s:04d}"
        svcs.append({"name": name, "protocol": "http", "ports": [80], "metadata": {}})
        for i in range(instances):
            insts.append({"service": name, "id": f"i{i}", "address": f"10.{s // 250}.{s % 250}.{i + 1}",
                          "port": 8080, "weight": 1, "labels": {"zone": f"z{i % 2}"}, "version": "",
                          "group": "", "health": "healthy", "ttl_seconds": None})
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "embedded-registry.json").write_text(json.dumps({"format": 1, "services": svcs, "instances": insts}))


class SimClient:
    """An Envoy-like ADS client: wildcard CDS and LDS, EDS for every cluster, RDS for its route config.

    A stream that fails is counted by status code and opened again after 1 s, as Envoy does."""

    def __init__(self, n: int, channel: grpc.aio.Channel, delta: bool, clusters: list[str]) -> None:
        self.node = base_pb2.Node(id=f"sim-{n}", cluster="bench")
        self.node.metadata.CopyFrom(struct_pb2.Struct())
        self.node.metadata.update({"sofamesh.outbound_port": 15001})
        self.delta = delta
        self.clusters = clusters
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.seen: dict[str, tuple[float, int]] = {}  # type -> (time of last response, resources in it)
        self.bytes = 0
        self.failures: dict[str, int] = {}  # status code name -> streams that ended with it
        self.changed = asyncio.Event()

    async def _requests(self, out: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while True:
            yield await out.get()

    def request(self, type_url: str, names: list[str], nonce: str = "", version: str = "") -> None:
        if self.delta:
            self.out.put_nowait(discovery_pb2.DeltaDiscoveryRequest(
                node=self.node, type_url=type_url, resource_names_subscribe=[] if nonce else names,
                response_nonce=nonce))
        else:
            self.out.put_nowait(discovery_pb2.DiscoveryRequest(
                node=self.node, type_url=type_url, resource_names=names, response_nonce=nonce, version_info=version))

    async def run(self) -> None:
        while True:
            self.out = asyncio.Queue()
            self.seen.clear()
            method = self.stub.DeltaAggregatedResources if self.delta else self.stub.StreamAggregatedResources
            call = method(self._requests(self.out))
            try:
                await self._stream(call)
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = f"{e.code().name}: {(e.details() or '')[:60]}"
            self.failures[code] = self.failures.get(code, 0) + 1
            await asyncio.sleep(1.0)

    async def _stream(self, call: Any) -> None:
        self.request(CLUSTER, [])
        self.request(LISTENER, [])
        asked_eds = asked_rds = False
        async for resp in call:
            self.bytes += resp.ByteSize()
            self.seen[resp.type_url] = (time.time(), len(resp.resources))  # wall clock: compared across processes
            version = "" if self.delta else resp.version_info
            names = {ENDPOINT: self.clusters, ROUTE: ["outbound|15001"]}.get(resp.type_url, [])
            self.request(resp.type_url, names, resp.nonce, version)  # ACK
            if resp.type_url == CLUSTER and not asked_eds:
                asked_eds = True
                self.request(ENDPOINT, self.clusters)
            if resp.type_url == LISTENER and not asked_rds:
                asked_rds = True
                self.request(ROUTE, ["outbound|15001"])
            self.changed.set()


async def wait_all(clients: list[SimClient], done: Any, timeout: float) -> float:
    """Wait until ``done(client)`` holds for every client; return the last client's completion time."""
    deadline = time.monotonic() + timeout
    while not all(done(c) for c in clients):
        if time.monotonic() > deadline:
            missing = sum(1 for c in clients if not done(c))
            raise TimeoutError(f"{missing} of {len(clients)} clients not done after {timeout}s")
        await asyncio.sleep(0.01)
    return max(max(t for t, _ in c.seen.values()) for c in clients)


def _synced(c: SimClient, expected: int) -> bool:
    return all(t in c.seen for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)) and \
        c.seen[ENDPOINT][1] == expected and c.seen[CLUSTER][1] == expected


def _eds_after(c: SimClient, t0: float) -> bool:
    return c.seen[ENDPOINT][0] > t0


def _service_added(c: SimClient, t0: float, cds: int) -> bool:
    return c.seen[CLUSTER][1] == cds and c.seen[ROUTE][0] > t0


def _type_after(c: SimClient, t0: float, type_url: str) -> bool:
    return c.seen[type_url][0] > t0


POLICY_PHASES = {"dr": CLUSTER, "vs": ROUTE, "weights": ROUTE}
_SHORT = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}


def policy_body(phase: str) -> tuple[str, dict[str, Any]]:
    """The REST path and body of a policy phase (on service svc-0000, subsets by the zone label)."""
    if phase == "dr":
        return "destinationrules/svc-0000", {
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "svc-0000"},
            "spec": {"host": "svc-0000", "subsets": [{"name": "a", "labels": {"zone": "z0"}},
                                                     {"name": "b", "labels": {"zone": "z1"}}]}}
    a = 80 if phase == "vs" else 50
    return "virtualservices/svc-0000", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "svc-0000"},
        "spec": {"hosts": ["svc-0000"], "http": [{"route": [
            {"destination": {"host": "svc-0000", "subset": "a"}, "weight": a},
            {"destination": {"host": "svc-0000", "subset": "b"}, "weight": 100 - a}]}]}}


async def worker(args: argparse.Namespace) -> None:
    """A client process: ``--clients`` streams; reads phase commands on stdin, prints completion times."""
    clusters = [f"outbound|80|svc-{s:04d}" for s in range(args.services)]
    # One HTTP/2 connection per client by default, as sidecars have (a channel option keeps grpc from
    # sharing one subchannel between channels of the same target).
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{args.worker}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, -(-args.clients // args.streams_per_connection)))]
    clients = [SimClient(args.first + n, channels[n % len(channels)], args.delta, clusters)
               for n in range(args.clients)]
    tasks: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()
    expected = args.services
    print(json.dumps({"ready": args.clients}), flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            break
        phase, t0 = line[0], float(line[1]) if len(line) > 1 else 0.0
        done: Callable[[SimClient], bool]
        if phase == "sync":  # connect now; done when every type arrived in full
            tasks = [asyncio.ensure_future(c.run()) for c in clients]
            done = partial(_synced, expected=expected)
        elif phase == "instance":  # one cluster's endpoints changed
            done = partial(_eds_after, t0=t0)
        elif phase in POLICY_PHASES:
            done = partial(_type_after, t0=t0, type_url=POLICY_PHASES[phase])
        else:  # "service": a new service appears in CDS and RDS
            for c in clients:
                c.clusters = [*clusters, "outbound|80|svc-new"]
            done = partial(_service_added, t0=t0, cds=expected + 1 if not args.delta else 1)
        at = await wait_all(clients, done, args.timeout)
        await asyncio.sleep(0.3)  # anything else this change re-sends arrives meanwhile
        resent = sorted({_SHORT.get(u, u) for c in clients for u, (t, _) in c.seen.items() if t > t0})
        failures: dict[str, int] = {}
        for c in clients:
            for code, n in c.failures.items():
                failures[code] = failures.get(code, 0) + n
        print(json.dumps({"phase": phase, "at": at, "bytes": clients[0].bytes, "resent": resent,
                          "failures": failures, "cpu_s": round(time.process_time(), 2)}), flush=True)
    for t in tasks:
        t.cancel()
    for ch in channels:
        await ch.close()


class Workers:
    """Client processes, ``per_process`` streams each, driven phase by phase."""

    def __init__(self, args: argparse.Namespace, xds: int) -> None:
        self.procs = []
        for i, first in enumerate(range(0, args.clients, args.per_process)):
            n = min(args.per_process, args.clients - first)
            if args.go:
                cmd = [str(build_adsload()), "-addr", f"127.0.0.1:{xds}", "-clients", str(n), "-first", str(first),
                       "-services", str(args.services), "-timeout", str(args.timeout)]
            else:
                cmd = [sys.executable, __file__, "--worker", str(xds), "--clients", str(n), "--first", str(first),
                       "--services", str(args.services), "--timeout", str(args.timeout),
                       "--streams-per-connection", str(args.streams_per_connection)]
            if args.delta or (args.mixed and i % 2):
                cmd.append("-delta" if args.go else "--delta")
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in self.procs:  # every client process imported and built its clients
            assert p.stdout is not None
            json.loads(p.stdout.readline())["ready"]

    async def phase(self, name: str, t0: float) -> tuple[float, int]:
        at, size, _ = await self.phase_resent(name, t0)
        return at, size

    failures: dict[str, int]
    client_cpu_s = 0.0

    async def phase_resent(self, name: str, t0: float) -> tuple[float, int, list[str]]:
        """Every worker's clients reached the phase's condition: the last completion time, bytes/client."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"{name} {t0}\n")
            p.stdin.flush()
        loop = asyncio.get_running_loop()
        answers = [json.loads(await loop.run_in_executor(None, p.stdout.readline))  # type: ignore[union-attr]
                   for p in self.procs]
        self.failures = {}
        for a in answers:
            for code, n in a["failures"].items():
                self.failures[code] = self.failures.get(code, 0) + n
        self.client_cpu_s = sum(a["cpu_s"] for a in answers)
        return max(a["at"] for a in answers), answers[0]["bytes"], sorted({t for a in answers for t in a["resent"]})

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                with contextlib.suppress(BrokenPipeError):  # a worker that failed already exited
                    p.stdin.write("quit\n")
                    p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            if p.stdout is not None:
                p.stdout.close()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pilot-scale-"))
    write_store(tmp / "data", args.services, args.instances)
    xds, api = free_port(), free_port()
    log = (tmp / "pilot.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sofamesh", "pilot", "--xds", f"127.0.0.1:{xds}",
                             "--api", f"127.0.0.1:{api}", "--data-dir", str(tmp / "data"),
                             "--log-level", "WARNING", "--debounce-ms", str(args.debounce_ms)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    result: dict[str, Any] = {"load_generator": "adsload (Go)" if args.go else "grpc.aio (Python)",
                              "services": args.services, "instances_per_service": args.instances,
                              "clients": args.clients, "client_processes": -(-args.clients // args.per_process),
                              "mode": "delta" if args.delta else "mixed" if args.mixed else "sotw", "debounce_ms": args.debounce_ms}
    workers: Workers | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api}", timeout=10) as http:
            for _ in range(400):
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            result["rss_idle_mb"] = round(pilot_rss_mb(proc.pid)[0], 1)

            workers = Workers(args, xds)
            cpu0, t0 = pilot_cpu_s(proc.pid), time.time()
            end, result["bytes_per_client_initial"] = await workers.phase("sync", t0)
            await asyncio.sleep(0.5)  # let the last ACKs land before reading CPU
            result["initial_sync_s"] = round(end - t0, 3)
            result["initial_sync_pilot_cpu_s"] = round(pilot_cpu_s(proc.pid) - cpu0, 2)
            result["initial_sync_failed_streams"] = workers.failures  # by status code; each retried after 1 s
            result["initial_sync_client_cpu_s"] = round(workers.client_cpu_s, 2)
            result["rss_after_sync_mb"], result["rss_peak_mb"] = (round(x, 1) for x in pilot_rss_mb(proc.pid))

            # one more instance for one service: one cluster's endpoints change everywhere
            cpu0, t0 = pilot_cpu_s(proc.pid), time.time()
            r = await http.put("/v1/services/svc-0000/instances/extra",
                               json={"address": "10.99.0.1", "port": 8080, "protocol": "http"})
            r.raise_for_status()
            end, size = await workers.phase("instance", t0)
            await asyncio.sleep(0.3)
            result["instance_push_s"] = round(end - t0, 3)
            result["instance_push_pilot_cpu_s"] = round(pilot_cpu_s(proc.pid) - cpu0, 2)
            result["instance_push_bytes_per_client"] = size - result["bytes_per_client_initial"]

            # a new service: every client gets new CDS and RDS (and asks EDS for the new cluster)
            cpu0, t0 = pilot_cpu_s(proc.pid), time.time()
            r = await http.put("/v1/services/svc-new/instances/a",
                               json={"address": "10.99.0.2", "port": 8080, "protocol": "http"})
            r.raise_for_status()
            end, _ = await workers.phase("service", t0)
            await asyncio.sleep(0.3)
            result["service_push_s"] = round(end - t0, 3)
            result["service_push_pilot_cpu_s"] = round(pilot_cpu_s(proc.pid) - cpu0, 2)
            if args.policy:
                for phase in POLICY_PHASES:
                    path, body = policy_body(phase)
                    cpu0, t0 = pilot_cpu_s(proc.pid), time.time()
                    r = await http.put(f"/apis/networking.istio.io/v1/namespaces/default/{path}", json=body)
                    r.raise_for_status()
                    answered = time.time()
                    end, _, resent = await workers.phase_resent(phase, t0)
                    result[f"policy_{phase}_push_s"] = round(end - answered, 3)
                    result[f"policy_{phase}_pilot_cpu_s"] = round(pilot_cpu_s(proc.pid) - cpu0, 2)
                    result[f"policy_{phase}_resent"] = resent
            result["rss_end_mb"], result["rss_peak_mb"] = (round(x, 1) for x in pilot_rss_mb(proc.pid))
            try:  # /debug/syncz lists every node's every name: slow at this size
                syncz = (await http.get("/debug/syncz", timeout=120)).json()
                result["connected_nodes"] = len(syncz["nodes"])
                result["statuses"] = sorted({t["status"] for n in syncz["nodes"] for t in n["types"].values()})
            except httpx.HTTPError as e:
                result["syncz_error"] = repr(e)
    finally:
        try:
            if workers is not None:
                workers.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--delta", action="store_true", help="delta ADS instead of state of the world")
    p.add_argument("--mixed", action="store_true", help="every other client process uses delta ADS")
    p.add_argument("--policy", action="store_true", help="also time DestinationRule / VirtualService pushes")
    p.add_argument("--debounce-ms", type=int, default=100)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--per-process", type=int, help="simulated clients per client process (250; --go: 1000)")
    p.add_argument("--go", action="store_true", help="simulate the clients with benchmarks/adsload (Go)")
    p.add_argument("--streams-per-connection", type=int, default=1,
                   help="ADS streams sharing one HTTP/2 connection (1: one connection per client, as sidecars)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # xDS port: run as a client process
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.per_process is None:
        args.per_process = 1000 if args.go else 250
    if args.worker:
        asyncio.run(worker(args))
    else:
        print(json.dumps(asyncio.run(bench(args)), indent=1))


if __name__ == "__main__":
    main()
