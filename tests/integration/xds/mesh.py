"""Mesh test fixtures: sidecars fed by xDS, a steady stream of calls, waits on the sidecars' config."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

from sofamesh.testing import ProxyProcess, free_port


class Sidecar(ProxyProcess):
    """``sofamesh proxy -c bootstrap.yaml`` whose bootstrap names an xDS server; egress ports are free
    ports passed as node metadata, so several sidecars share one machine."""

    def __init__(self, xds_port: int, node_id: str, mode: str = "sotw", metadata: dict[str, Any] | None = None,
                 drain_timeout_ms: int = 2000, locality: str = "", more_xds_ports: Sequence[int] = (),
                 args: tuple[str, ...] = ()) -> None:
        self.ports = {"http": free_port(), "bolt": free_port(), "dubbo": free_port()}
        meta = {"sofamesh.outbound_port": self.ports["http"], "sofamesh.bolt_port": self.ports["bolt"],
                "sofamesh.dubbo_port": self.ports["dubbo"], **(metadata or {})}
        region, zone, sub_zone = [*locality.split("/", 2), "", ""][:3]
        super().__init__({"drain_timeout_ms": drain_timeout_ms,
                          "node": {"locality": {"region": region, "zone": zone, "sub_zone": sub_zone}},
                          "xds": {"address": f"127.0.0.1:{xds_port}", "node_id": node_id, "mode": mode,
                                  "addresses": [f"127.0.0.1:{p}" for p in more_xds_ports],
                                  "metadata": meta, "backoff_initial_ms": 100, "backoff_max_ms": 500,
                                  "initial_fetch_timeout_ms": 10000}}, timeout=30, args=args)

    def egress(self, protocol: str) -> str:
        return f"127.0.0.1:{self.ports[protocol]}"

    def dump(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/config_dump")))

    def endpoints(self, cluster_suffix: str) -> set[str]:
        for c in self.dump()["config"]["clusters"]:
            if c["name"].endswith(cluster_suffix):
                return {e["address"] for e in c["endpoints"]}
        return set()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Stream:
    """Calls ``batch()`` over and over in a thread; each batch returns (servers, failures)."""

    def __init__(self, batch: Callable[[], tuple[list[str], list[str]]]) -> None:
        self.batch = batch
        self.served: Counter[str] = Counter()
        self.failures: list[str] = []
        self.batches = 0
        self.timeline: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                servers, failures = self.batch()
            except Exception as exc:  # a batch that could not even run is a failed call
                servers, failures = [], [f"{type(exc).__name__}: {exc}"]
            self.served.update(servers)
            self.failures.extend(failures)
            self.timeline.append((started, servers))  # a batch counts from when it started
            self.batches += 1

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def served_since(self, t: float) -> Counter[str]:
        """Who served the batches that started at or after ``t``."""
        out: Counter[str] = Counter()
        for at, servers in list(self.timeline):
            if at >= t:
                out.update(servers)
        return out

    def wait_served(self, *names: str, timeout: float = 30.0) -> None:
        """Wait until each of ``names`` has served a batch started from now on."""
        t = time.monotonic()
        wait_for(lambda: all(self.served_since(t)[n] > 0 for n in names), timeout,
                 f"{', '.join(names)} each to serve calls")

    def wait_batches(self, n: int, timeout: float = 60.0) -> None:
        start = self.batches
        wait_for(lambda: self.batches >= start + n, timeout, f"{n} more batches of calls")


def http_get(address: str, host: str, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{address}{path}", headers={"Host": host})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return int(r.status), bytes(r.read())


class Provider(Protocol):
    name: str
    address: str

    def stop(self) -> None: ...


Batch = Callable[[list[Sidecar]], tuple[list[str], list[str]]]


def scaling_scenario(data_dir: Path, mode: str, service: str, protocol: str,
                     start_provider: Callable[[str], Provider], batch: Batch,
                     register: dict[str, Any] | None = None, transport: str = "grpcio") -> Stream:
    """Pilot + two sidecars + providers p1, p2 of ``service``; during a steady stream of ``batch``
    calls through both sidecars: p3 is added, p1 removed (deregistered, then stopped once no sidecar
    routes to it), Pilot is killed (calls go on), restarted on the same ports (the sidecars
    reconnect), and p4 is added through the new Pilot (every sidecar then routes to p2, p3 and p4,
    and each of them serves calls). ``transport``: Pilot's ``xds.transport``. Returns the finished stream; the caller asserts there was no
    failed call."""
    from tests.integration.pilot.conftest import PilotProcess

    pilot = PilotProcess(data_dir, transport=transport).start()
    providers: dict[str, Provider] = {}
    sidecars: list[Sidecar] = []
    suffix = f"|{service}"

    def add(name: str) -> None:
        p = providers[name] = start_provider(name)
        host, port = p.address.rsplit(":", 1)
        pilot.register(service, name, address=host, port=int(port), protocol=protocol, **(register or {}))

    try:
        add("p1")
        add("p2")
        sidecars = [Sidecar(pilot.xds_port, f"app-{i}", mode).start() for i in (1, 2)]
        for sc in sidecars:
            wait_for(lambda sc=sc: sc.endpoints(suffix) == {providers["p1"].address, providers["p2"].address}, 10,
                     "both providers in the sidecar's endpoints")
        with Stream(lambda: batch(sidecars)) as stream:
            stream.wait_served("p1")
            stream.wait_served("p2")
            add("p3")
            stream.wait_served("p3")
            pilot.deregister(service, "p1")
            for sc in sidecars:
                wait_for(lambda sc=sc: providers["p1"].address not in sc.endpoints(suffix), 10, "p1 to leave EDS")
            after_removal = time.monotonic()
            time.sleep(0.3)  # calls sent just before the change finish on p1
            providers["p1"].stop()
            stream.wait_batches(2)
            assert stream.served_since(after_removal)["p1"] == 0
            assert pilot.proc is not None
            pilot.proc.kill()  # SIGKILL: no goodbye on the streams
            pilot.proc.wait(10)
            pilot_gone = time.monotonic()
            stream.wait_batches(3)
            assert stream.served_since(pilot_gone)["p2"] > 0 and stream.served_since(pilot_gone)["p3"] > 0
            for sc in sidecars:
                assert sc.dump()["xds"]["connected"] is False
            pilot = PilotProcess(data_dir, xds_port=pilot.xds_port, api_port=pilot.api_port, transport=transport).start()
            for sc in sidecars:
                wait_for(lambda sc=sc: sc.dump()["xds"]["connects"] >= 2 and sc.dump()["xds"]["connected"], 15,
                         "the sidecar to reconnect")
            add("p4")
            # The restarted Pilot knows every live provider, not just the one added through it.
            live = {providers[n].address for n in ("p2", "p3", "p4")}
            for sc in sidecars:
                wait_for(lambda sc=sc: sc.endpoints(suffix) == live, 15, "p2, p3 and p4 in the sidecar's endpoints")
            stream.wait_served("p2", "p3", "p4")
        for sc in sidecars:
            xds = sc.dump()["xds"]
            assert xds["last_nack"] is None, xds["last_nack"]
            assert {xds["types"][t]["status"] for t in ("lds", "cds", "eds")} == {"ACKED"}
        return stream
    finally:
        with ExitStack() as stack:  # stop them all, then raise the first sidecar's failure
            for p in providers.values():
                stack.callback(p.stop)
            stack.callback(pilot.stop)
            for sc in sidecars:
                stack.callback(sc.stop)
