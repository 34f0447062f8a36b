"""Pilot + two sidecars configured over xDS + real HTTP upstreams: calls by service name keep
working while providers scale up and down and while Pilot is away."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.upstream import UpstreamServer
from tests.integration.xds.mesh import Sidecar, Stream, http_get, wait_for

SERVICE = "hello"


def _batch(sidecars: list[Sidecar]) -> tuple[list[str], list[str]]:
    servers, failures = [], []
    for sc in sidecars:
        for _ in range(5):
            try:
                status, body = http_get(sc.egress("http"), SERVICE, "/who")
            except OSError as exc:
                failures.append(f"{sc.egress('http')}: {exc}")
                continue
            if status != 200:
                failures.append(f"{status} {body!r}")
            else:
                servers.append(body.split()[0].decode())
    return servers, failures


def _register(pilot: PilotProcess, up: UpstreamServer) -> None:
    host, port = up.address.rsplit(":", 1)
    pilot.register(SERVICE, up.name, address=host, port=int(port), protocol="http")


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_http_calls_by_service_name_survive_scaling_and_a_pilot_restart(tmp_path: Path, mode: str) -> None:
    pilot = PilotProcess(tmp_path / "data").start()
    ups = {n: UpstreamServer(n).__enter__() for n in ("p1", "p2", "p3", "p4")}
    sidecars: list[Sidecar] = []
    try:
        for n in ("p1", "p2"):
            _register(pilot, ups[n])
        sidecars = [Sidecar(pilot.xds_port, f"app-{i}", mode).start() for i in (1, 2)]
        for sc in sidecars:
            wait_for(lambda sc=sc: sc.endpoints(f"|{SERVICE}") == {ups["p1"].address, ups["p2"].address}, 10,
                     "both providers in the sidecar's endpoints")
        with Stream(lambda: _batch(sidecars)) as stream:
            stream.wait_served("p1")
            stream.wait_served("p2")
            # Scale up: a third provider gets traffic.
            _register(pilot, ups["p3"])
            stream.wait_served("p3")
            # Scale down: deregister p1, wait until no sidecar routes to it, then stop it.
            pilot.deregister(SERVICE, "p1")
            for sc in sidecars:
                wait_for(lambda sc=sc: ups["p1"].address not in sc.endpoints(f"|{SERVICE}"), 10, "p1 to leave EDS")
            ups["p1"].__exit__()
            after_removal = time.monotonic()
            stream.wait_batches(3)
            assert stream.served_since(after_removal)["p1"] == 0
            # Pilot goes away: the last good config keeps serving.
            pilot.stop()
            pilot_gone = time.monotonic()
            stream.wait_batches(5)
            assert stream.served_since(pilot_gone)["p2"] > 0 and stream.served_since(pilot_gone)["p3"] > 0
            for sc in sidecars:
                assert sc.dump()["xds"]["connected"] is False
            # Pilot comes back on the same ports: the sidecars resync and see a new provider.
            pilot = PilotProcess(tmp_path / "data", xds_port=pilot.xds_port, api_port=pilot.api_port).start()
            for sc in sidecars:
                wait_for(lambda sc=sc: sc.dump()["xds"]["connects"] >= 2 and sc.dump()["xds"]["connected"], 15,
                         "the sidecar to reconnect")
            _register(pilot, ups["p4"])
            stream.wait_served("p4")
        assert stream.failures == []
        assert stream.batches > 10
        for sc in sidecars:
            xds = sc.dump()["xds"]
            assert xds["last_nack"] is None
            assert {t: xds["types"][t]["status"] for t in ("lds", "rds", "cds", "eds")} == dict.fromkeys(
                ("lds", "rds", "cds", "eds"), "ACKED")
            # Endpoint changes never touched the client side: one listener, never re-created.
            assert sc.stats()["listeners"][f"outbound|{sc.ports['http']}"]["downstream_rq_total"] > 0
    finally:
        for sc in sidecars:
            sc.stop()
        pilot.stop()
        for n, up in ups.items():
            if n != "p1":
                up.__exit__()
