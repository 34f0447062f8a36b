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
``--replicas N`` runs N Pilots sharing one etcd (started here, ``etcd`` on PATH; the registry is
the ``etcd`` registry with ``leases: instance``, filled with the same services) with the client
processes split between them; the one-instance and one-service changes are written through the
first replica's API, so their push times include the store's watch to every other replica.
``memory_per_client_kb`` is Pilot's RSS after the sync minus its RSS idle, per connected client
(the sum over replicas).
``--transport grpcio,native`` runs the whole benchmark once per Pilot xDS transport (``xds.transport``),
side by side, ``--repeat`` times (interleaved: grpcio, native, grpcio, ...), and ends with a summary
per transport (min / median / max over the runs, and the load average before each run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    """The Go client, built on first use (``run.go_binary``)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import run

    return run.go_binary(ADSLOAD)


def pilot_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pilot_rss_mb(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def _records(services: int, instances: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    svcs, insts = [], []
    for s in range(services):
        name = f"svc-{s:04d}"
        svcs.append({"name": name, "protocol": "http", "ports": [80], "metadata": {}})
        for i in range(instances):
            insts.append({"service": name, "id": f"i{i}", "address": f"10.{s // 250}.{s % 250}.{i + 1}",
                          "port": 8080, "weight": 1, "labels": {"zone": f"z{i % 2}"}, "version": "",
                          "group": "", "health": "healthy", "ttl_seconds": None})
    return svcs, insts


def write_store(data_dir: Path, services: int, instances: int) -> None:
    """The embedded registry's file format (format 1), written directly to skip S*I API calls."""
    svcs, insts = _records(services, instances)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "embedded-registry.json").write_text(json.dumps({"format": 1, "services": svcs, "instances": insts}))


def _b64(data: str) -> str:
    import base64

    return base64.b64encode(data.encode()).decode()


def start_etcd(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """An etcd for the replicas run (as tests/integration/registries/servers.py starts one)."""
    if shutil.which("etcd") is None:
        sys.exit("--replicas needs etcd on PATH (Debian etcd-server; scripts/setup.d/35-registry-servers.sh)")
    port, peer_port = free_port(), free_port()
    endpoint, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    proc = subprocess.Popen(["etcd", "--name", "bench", "--data-dir", str(tmp / "etcd"), "--listen-client-urls",
                             endpoint, "--advertise-client-urls", endpoint, "--listen-peer-urls", peer,
                             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"bench={peer}",
                             "--initial-cluster-state", "new", "--unsafe-no-fsync", "--log-level", "warn",
                             "--logger", "zap"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"{endpoint}/health", timeout=2).json().get("health") == "true":
                return proc, endpoint
        time.sleep(0.1)
    proc.kill()
    sys.exit("etcd did not become healthy")


def fill_etcd(endpoint: str, prefix: str, services: int, instances: int) -> None:
    """The etcd registry's layout: ``<prefix><service>/<id>`` -> {"service", "instance"}."""
    svcs, insts = _records(services, instances)
    by_name = {s["name"]: s for s in svcs}
    with httpx.Client(base_url=endpoint, timeout=10) as http:
        for inst in insts:
            doc = {"service": by_name[inst["service"]], "instance": {k: v for k, v in inst.items() if k != "ttl_seconds"}}
            http.post("/v3/kv/put", json={"key": _b64(f"{prefix}{inst['service']}/{inst['id']}"),
                                          "value": _b64(json.dumps(doc))}).raise_for_status()


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

    def __init__(self, args: argparse.Namespace, xds_ports: list[int]) -> None:
        self.procs = []
        for i, first in enumerate(range(0, args.clients, args.per_process)):
            n = min(args.per_process, args.clients - first)
            xds = xds_ports[i % len(xds_ports)]  # client processes split between the replicas
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


class Pilots:
    """``--replicas`` Pilot processes (one over the embedded store, or N over one etcd)."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.etcd: subprocess.Popen[bytes] | None = None
        extra: list[str] = []
        if args.replicas > 1:
            self.etcd, endpoint = start_etcd(tmp)
            fill_etcd(endpoint, "/bench/registry/", args.services, args.instances)
            cfg = tmp / "pilot.json"
            cfg.write_text(json.dumps({"registries": [{"name": "mesh", "type": "etcd", "writable": True, "options": {
                "endpoint": endpoint, "prefix": "/bench/registry/", "leases": "instance"}}]}))
            extra = ["-c", str(cfg)]
        else:
            write_store(tmp / "data-0", args.services, args.instances)
        self.xds = [free_port() for _ in range(args.replicas)]
        self.api = [free_port() for _ in range(args.replicas)]
        self.log = (tmp / "pilot.log").open("wb")
        self.procs = [subprocess.Popen([sys.executable, "-m", "sofamesh", "pilot", *extra, "--xds", f"127.0.0.1:{x}",
                                        "--api", f"127.0.0.1:{a}", "--data-dir", str(tmp / f"data-{i}"),
                                        "--log-level", "WARNING", "--debounce-ms", str(args.debounce_ms),
                                        "--xds-transport", args.transport],
                                       stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
                      for i, (x, a) in enumerate(zip(self.xds, self.api, strict=True))]

    def cpu_s(self) -> float:
        return sum(pilot_cpu_s(p.pid) for p in self.procs)

    def rss_mb(self) -> tuple[float, float]:
        """The sum over replicas of RSS now and of peak RSS."""
        both = [pilot_rss_mb(p.pid) for p in self.procs]
        return sum(r for r, _ in both), sum(h for _, h in both)

    async def ready(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for a in self.api:
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{a}/ready")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:  # a Pilot still encoding /debug/syncz of 2000 nodes answers SIGTERM late
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if self.etcd is not None:
            self.etcd.terminate()
            self.etcd.wait(timeout=10)
        self.log.close()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pilot-scale-"))
    pilots = Pilots(args, tmp)
    api = pilots.api[0]
    result: dict[str, Any] = {"load_generator": "adsload (Go)" if args.go else "grpc.aio (Python)",
                              "transport": args.transport, "loadavg_before": list(os.getloadavg()),
                              "replicas": args.replicas,
                              "services": args.services, "instances_per_service": args.instances,
                              "clients": args.clients, "client_processes": -(-args.clients // args.per_process),
                              "mode": "delta" if args.delta else "mixed" if args.mixed else "sotw", "debounce_ms": args.debounce_ms}
    workers: Workers | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api}", timeout=10) as http:
            await pilots.ready()
            result["rss_idle_mb"] = round(pilots.rss_mb()[0], 1)

            spy = None
            if args.profile:  # py-spy over the first replica while the clients sync
                out = Path(args.profile) / f"pilot-{args.transport}-{args.clients}-{int(time.time())}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                spy = subprocess.Popen([py_spy, "record", "-p", str(pilots.procs[0].pid), "-d", "15", "-r", "50",
                                        "--format", "raw", "-o", str(out)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await asyncio.sleep(1.0)
                result["profile"] = str(out)
            workers = Workers(args, pilots.xds)
            cpu0, t0 = pilots.cpu_s(), time.time()
            end, result["bytes_per_client_initial"] = await workers.phase("sync", t0)
            await asyncio.sleep(0.5)  # let the last ACKs land before reading CPU
            result["initial_sync_s"] = round(end - t0, 3)
            result["initial_sync_pilot_cpu_s"] = round(pilots.cpu_s() - cpu0, 2)
            result["pilot_cpu_ms_per_client"] = round(result["initial_sync_pilot_cpu_s"] * 1000 / args.clients, 2)
            result["pilot_cores_during_sync"] = round(result["initial_sync_pilot_cpu_s"] / max(end - t0, 1e-9), 2)
            result["initial_sync_failed_streams"] = workers.failures  # by status code; each retried after 1 s
            result["initial_sync_client_cpu_s"] = round(workers.client_cpu_s, 2)
            if spy is not None:
                await asyncio.to_thread(spy.wait, 60)
            result["rss_after_sync_mb"], result["rss_peak_mb"] = (round(x, 1) for x in pilots.rss_mb())
            result["memory_per_client_kb"] = round((result["rss_after_sync_mb"] - result["rss_idle_mb"]) * 1024
                                                   / args.clients, 1)

            # one more instance for one service: one cluster's endpoints change everywhere
            cpu0, t0 = pilots.cpu_s(), time.time()
            r = await http.put("/v1/services/svc-0000/instances/extra",
                               json={"address": "10.99.0.1", "port": 8080, "protocol": "http"})
            r.raise_for_status()
            end, size = await workers.phase("instance", t0)
            await asyncio.sleep(0.3)
            result["instance_push_s"] = round(end - t0, 3)
            result["instance_push_pilot_cpu_s"] = round(pilots.cpu_s() - cpu0, 2)
            result["instance_push_bytes_per_client"] = size - result["bytes_per_client_initial"]

            # a new service: every client gets new CDS and RDS (and asks EDS for the new cluster)
            cpu0, t0 = pilots.cpu_s(), time.time()
            r = await http.put("/v1/services/svc-new/instances/a",
                               json={"address": "10.99.0.2", "port": 8080, "protocol": "http"})
            r.raise_for_status()
            end, _ = await workers.phase("service", t0)
            await asyncio.sleep(0.3)
            result["service_push_s"] = round(end - t0, 3)
            result["service_push_pilot_cpu_s"] = round(pilots.cpu_s() - cpu0, 2)
            if args.policy:
                for phase in POLICY_PHASES:
                    path, body = policy_body(phase)
                    cpu0, t0 = pilots.cpu_s(), time.time()
                    r = await http.put(f"/apis/networking.istio.io/v1/namespaces/default/{path}", json=body)
                    r.raise_for_status()
                    answered = time.time()
                    end, _, resent = await workers.phase_resent(phase, t0)
                    result[f"policy_{phase}_push_s"] = round(end - answered, 3)
                    result[f"policy_{phase}_pilot_cpu_s"] = round(pilots.cpu_s() - cpu0, 2)
                    result[f"policy_{phase}_resent"] = resent
            result["rss_end_mb"], result["rss_peak_mb"] = (round(x, 1) for x in pilots.rss_mb())
            try:  # /debug/syncz lists every node's every name: slow at this size
                if args.skip_syncz:
                    raise httpx.HTTPError("--skip-syncz")
                nodes, pushes = [], []
                for a in pilots.api:
                    syncz = (await http.get(f"http://127.0.0.1:{a}/debug/syncz", timeout=120)).json()
                    nodes += syncz["nodes"]
                    pushes.append(syncz["pushes"])
                result["pushes"] = pushes  # per replica, the start's and every phase's included
                result["connected_nodes"] = len(nodes)
                result["statuses"] = sorted({t["status"] for n in nodes for t in n["types"].values()})
            except httpx.HTTPError as e:
                result["syncz_error"] = repr(e)
    finally:
        try:
            if workers is not None:
                workers.close()
        finally:
            pilots.stop()
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
    p.add_argument("--replicas", type=int, default=1, help="Pilots sharing one etcd, client processes split between them")
    p.add_argument("--streams-per-connection", type=int, default=1,
                   help="ADS streams sharing one HTTP/2 connection (1: one connection per client, as sidecars)")
    p.add_argument("--transport", default="grpcio",
                   help="Pilot's xds.transport; several comma-separated run side by side (grpcio,native)")
    p.add_argument("--profile", metavar="DIR", help="py-spy (raw, collapsed stacks) of Pilot during the sync")
    p.add_argument("--skip-syncz", action="store_true", help="do not read /debug/syncz at the end (slow at 2000)")
    p.add_argument("--repeat", type=int, default=1, help="runs per transport (interleaved)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # xDS port: run as a client process
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.per_process is None:
        args.per_process = 1000 if args.go else 250
    if args.worker:
        asyncio.run(worker(args))
        return
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        for transport in transports:
            args.transport = transport
            runs.append(asyncio.run(bench(args)))
            print(json.dumps(runs[-1], indent=1), flush=True)
    if len(runs) > 1:
        print("summary: [min, median, max] per transport")
        for transport, figures in summary(runs).items():
            print(json.dumps({transport: figures}))


SUMMARY_KEYS = ("initial_sync_s", "initial_sync_pilot_cpu_s", "pilot_cpu_ms_per_client", "pilot_cores_during_sync",
                "initial_sync_client_cpu_s", "rss_after_sync_mb", "rss_peak_mb", "memory_per_client_kb",
                "instance_push_s", "service_push_s")


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per transport: [min, median, max] of each figure over the runs, and the 1-min load averages."""
    out: dict[str, Any] = {}
    for transport in dict.fromkeys(r["transport"] for r in runs):
        mine = [r for r in runs if r["transport"] == transport]
        figures: dict[str, Any] = {"runs": len(mine), "loadavg_1m": [round(r["loadavg_before"][0], 1) for r in mine]}
        for key in SUMMARY_KEYS:
            values = sorted(r[key] for r in mine if isinstance(r.get(key), int | float))
            if values:
                figures[key] = [values[0], values[len(values) // 2], values[-1]]
        figures["failed_streams"] = [r.get("initial_sync_failed_streams") for r in mine]
        out[transport] = figures
    return out


if __name__ == "__main__":
    main()
