"""Pilot reads an existing Nacos server (the ``nacos-cluster`` registry) and syncs both ways with it.

No Nacos server can be installed here (docs/registries.md), so a second Pilot serving Nacos's v1
open API stands in for it: the npm nacos 2.6.3 naming client registers instances into it, the first
Pilot's adapter polls it, and the first Pilot's sidecar reaches the instances. The other way round,
an instance registered through the first Pilot's Open Service Registry API is copied into the Nacos
server by registry sync, kept alive by the adapter's beats and found there by the npm client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import UpstreamServer, free_port
from tests.conformance.registry_api_peers import Client, StandIn, reach_through_sidecar
from tests.integration.xds.mesh import wait_for


class Pilots(StandIn):
    def __init__(self, tmp: Path, heartbeat_timeout_s: float, ip_delete_timeout_s: float) -> None:
        self.nacos = f"127.0.0.1:{free_port()}"
        served = {
            "address": self.nacos,
            "heartbeat_timeout_s": heartbeat_timeout_s,
            "ip_delete_timeout_s": ip_delete_timeout_s,
            "beat_interval_s": 1,
        }
        corp = {"endpoint": f"http://{self.nacos}", "poll_interval_s": 0.5, "beat_interval_s": 0.5}
        super().__init__(
            tmp, {"name": "nacos", "options": served}, lambda _url: {"type": "nacos-cluster", "options": corp}
        )

    def cluster_hosts(self, service: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"http://{self.nacos}/nacos/v1/ns/instance/list", params={"serviceName": service}, timeout=5)
        return list(resp.json()["hosts"]) if resp.status_code == 200 else []


@pytest.fixture
def slow_beats(tmp_path: Path) -> Iterator[Pilots]:
    # npm nacos beats first up to 10 s after registering: the stand-in waits 11 s before unhealthy
    with Pilots(tmp_path, 11, 13).running() as p:
        assert isinstance(p, Pilots)
        yield p


@pytest.fixture
def fast_beats(tmp_path: Path) -> Iterator[Pilots]:
    with Pilots(tmp_path, 2, 3).running() as p:
        assert isinstance(p, Pilots)
        yield p


def test_instances_registered_by_npm_nacos_are_mesh_instances_and_leave_with_it(slow_beats: Pilots) -> None:
    pilots = slow_beats
    with UpstreamServer("corp-app-v1") as up1, UpstreamServer("corp-app-v2") as up2:
        p1, p2 = (int(u.address.rsplit(":", 1)[1]) for u in (up1, up2))
        c1 = Client.nacos(pilots.nacos, "corp-app", p1, "v1", pilots.tmp / "na1.log")
        c2 = Client.nacos(pilots.nacos, "corp-app", p2, "v2", pilots.tmp / "na2.log")
        try:
            wait_for(lambda: pilots.healthy_versions("corp-app") == {"v1", "v2"}, 10, "both in the mesh model")
            rows = {i["id"]: i for i in pilots.instances("corp-app")}
            assert {(i, r["port"], r["origin"]) for i, r in rows.items()} == {
                (f"127.0.0.1:{p1}", p1, "corp"),
                (f"127.0.0.1:{p2}", p2, "corp"),
            }
            assert rows[f"127.0.0.1:{p1}"]["labels"]["version"] == "v1"
            corp = pilots.corp()
            assert corp["stale"] is False and corp["polls"] > 1, corp
            reach_through_sidecar(pilots.mesh.xds_port, "corp-app", {"corp-app-v1", "corp-app-v2"})
            c1.close()  # deregisters in the Nacos server
            wait_for(lambda: {i["port"] for i in pilots.instances("corp-app")} == {p2}, 10, "the deregistered one gone")
            c2.die()  # no more beats: unhealthy, then removed by the server
            wait_for(lambda: pilots.healthy_versions("corp-app") == set(), 20, "unhealthy without beats")
            wait_for(lambda: not pilots.instances("corp-app"), 10, "removed from the mesh")
        finally:
            c1.close()
            c2.close()


def test_two_way_sync_copies_mesh_instances_into_nacos_and_beats_keep_them(fast_beats: Pilots) -> None:
    pilots = fast_beats
    port = free_port()
    pilots.put_mesh_instance(port)
    probe_port = free_port()
    na = Client.nacos(pilots.nacos, "probe", free_port(), "v1", pilots.tmp / "probe.log")
    try:

        def found() -> list[dict[str, Any]]:
            return list(na.ask(cmd="discover", name="mesh-app")["instances"])

        rows = wait_for(found, 15, "the copy in the Nacos server")
        assert [(r["port"], r["healthy"], r["metadata"].get("version")) for r in rows] == [(port, True, "v3")]
        assert rows[0]["metadata"].get("sofamesh.source") == "embedded"
        assert rows[0]["metadata"].get("sofamesh.id") == "m-1"
        # beats keep it healthy past the server's 2 s heartbeat timeout and 3 s removal
        time.sleep(5)
        assert [(h["port"], h["healthy"]) for h in pilots.cluster_hosts("mesh-app")] == [(port, True)]
        # the copy read back from Nacos is the same instance, not taken for a native (no loop)
        assert [(i["id"], i["origin"]) for i in pilots.instances("mesh-app")] == [("m-1", "embedded")]
        assert pilots.corp()["registered"] == 1
        resp = httpx.delete(f"{pilots.mesh.api_url}/v1/services/mesh-app/instances/m-1", timeout=5)
        assert resp.status_code in (200, 204), resp.text
        # (asked directly: npm nacos keeps its last hosts when an answer has none, its empty-push protection)
        wait_for(lambda: not pilots.cluster_hosts("mesh-app"), 15, "the copy deregistered in the Nacos server")
        # the server goes away: the last known instances stay, marked stale
        kept = {"serviceName": "kept", "ip": "127.0.0.1", "port": str(probe_port), "ephemeral": "false"}
        assert httpx.post(f"http://{pilots.nacos}/nacos/v1/ns/instance", params=kept, timeout=5).text == "ok"
        wait_for(lambda: [i["port"] for i in pilots.instances("kept")] == [probe_port], 10, "a persistent one")
        pilots.cluster.stop()
        wait_for(lambda: pilots.corp()["stale"] is True, 10, "the registry marked stale")
        assert [i["port"] for i in pilots.instances("kept")] == [probe_port]
    finally:
        na.close()
