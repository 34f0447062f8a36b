"""Pilot reads an existing Eureka server (the ``eureka-cluster`` registry) and syncs both ways with it.

No Eureka server can be installed here (docs/registries.md), so a second Pilot serving Eureka's API
stands in for it: PyPI py-eureka-client registers instances into it, the first Pilot's adapter
follows it with full and delta fetches, and the first Pilot's sidecar reaches the instances. The
other way round, an instance registered through the first Pilot's Open Service Registry API is
copied into the Eureka server by registry sync and found there by py-eureka-client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import free_port
from tests.conformance.registry_api_peers import Client, StandIn, python_pair, reach_through_sidecar
from tests.integration.xds.mesh import wait_for


def _corp(api_url: str) -> dict[str, Any]:
    options = {"endpoint": f"{api_url}/eureka", "fetch_interval_s": 0.5, "renewal_interval_s": 1, "lease_s": 3}
    return {"type": "eureka-cluster", "options": options}


class Pilots(StandIn):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, {"name": "eureka", "options": {"max_lease_s": 3}}, _corp)
        self.eureka = f"{self.cluster.api_url}/eureka"


@pytest.fixture
def pilots(tmp_path: Path) -> Iterator[Pilots]:
    with Pilots(tmp_path).running() as p:
        assert isinstance(p, Pilots)
        yield p


def test_instances_registered_by_py_eureka_client_are_mesh_instances_and_leave_with_it(pilots: Pilots) -> None:
    with python_pair("eureka", pilots.eureka + "/", "corp-app", pilots.tmp) as (c1, c2, p1, p2):
        wait_for(lambda: pilots.healthy_versions("corp-app") == {"v1", "v2"}, 10, "both in the mesh model")
        rows = {i["id"]: i for i in pilots.instances("corp-app")}
        assert {(i, r["port"], r["origin"]) for i, r in rows.items()} == {
            ("corp-app-1", p1, "corp"),
            ("corp-app-2", p2, "corp"),
        }
        corp = pilots.corp()
        assert corp["stale"] is False and corp["delta_fetches"] > 0
        reach_through_sidecar(pilots.mesh.xds_port, "corp-app", {"corp-app-v1", "corp-app-v2"})
        c1.close()  # cancels in the Eureka server
        wait_for(
            lambda: {i["id"] for i in pilots.instances("corp-app")} == {"corp-app-2"}, 10, "the cancelled one gone"
        )
        c2.die()  # its lease lapses and the server evicts it
        wait_for(lambda: not pilots.instances("corp-app"), 15, "the evicted one gone from the mesh")
        # the copy was kept in step by deltas whose hashcode matched, not by full fetches
        corp = pilots.corp()
        assert corp["apps_hashcode"] == "" and corp["full_fetches"] * 3 < corp["delta_fetches"], corp


def test_two_way_sync_copies_mesh_instances_into_eureka_and_keeps_them_while_the_server_is_away(
    pilots: Pilots,
) -> None:
    port = free_port()
    pilots.put_mesh_instance(port)
    eu = Client.python("eureka", pilots.eureka + "/", "probe", "probe-1", free_port(), "v1", pilots.tmp / "probe.log")
    try:

        def found() -> list[dict[str, Any]]:
            return list(eu.ask(cmd="discover", name="mesh-app")["instances"])

        rows = wait_for(found, 15, "the copy in the Eureka server")
        assert [(r["id"], r["port"], r["metadata"].get("version")) for r in rows] == [("m-1", port, "v3")]
        assert rows[0]["metadata"].get("sofamesh.source") == "embedded"
        # renewals keep it past its 3 s lease
        time.sleep(5)
        assert [r["id"] for r in found()] == ["m-1"]
        # the copy read back from Eureka is not taken for a native (no loop, one instance)
        assert [i["id"] for i in pilots.instances("mesh-app")] == ["m-1"]
        resp = httpx.delete(f"{pilots.mesh.api_url}/v1/services/mesh-app/instances/m-1", timeout=5)
        assert resp.status_code in (200, 204), resp.text
        wait_for(lambda: not found(), 15, "the copy cancelled in the Eureka server")
        # the server goes away: the last known instances stay, marked stale
        wait_for(lambda: [i["id"] for i in pilots.instances("probe")] == ["probe-1"], 10, "the probe in the mesh")
        pilots.cluster.stop()
        wait_for(lambda: pilots.corp()["stale"] is True, 10, "the registry marked stale")
        assert [i["id"] for i in pilots.instances("probe")] == ["probe-1"]
    finally:
        eu.close()
