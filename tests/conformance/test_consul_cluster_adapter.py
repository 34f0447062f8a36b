"""Pilot reads an existing Consul cluster (the ``consul-cluster`` registry) and syncs both ways with it.

No Consul server can be installed here (docs/registries.md), so a second Pilot serving Consul's API
stands in for the cluster: PyPI py-consul 1.8.0 registers instances into it, the first Pilot's
adapter follows it with blocking queries, and the first Pilot's sidecar reaches the instances. The
other way round, an instance registered through the first Pilot's Open Service Registry API is
copied into the cluster by registry sync and found there by py-consul.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import free_port
from tests.conformance.registry_api_peers import Client, StandIn, python_pair, reach_through_sidecar
from tests.integration.xds.mesh import wait_for


class Pilots(StandIn):
    def __init__(self, tmp: Path) -> None:
        self.consul = f"127.0.0.1:{free_port()}"
        options = {"endpoint": f"http://{self.consul}", "wait_s": 5, "deregister_critical_after_s": 2}
        super().__init__(
            tmp,
            {"name": "consul", "options": {"address": self.consul}},
            lambda _url: {"type": "consul-cluster", "options": options},
        )


@pytest.fixture
def pilots(tmp_path: Path) -> Iterator[Pilots]:
    with Pilots(tmp_path).running() as p:
        assert isinstance(p, Pilots)
        yield p


def test_instances_registered_in_the_cluster_by_py_consul_are_mesh_instances_and_leave_with_it(pilots: Pilots) -> None:
    with python_pair("consul", pilots.consul, "corp-app", pilots.tmp) as (c1, c2, p1, p2):
        wait_for(lambda: pilots.healthy_versions("corp-app") == {"v1", "v2"}, 10, "both in the mesh model")
        rows = {i["id"]: i for i in pilots.instances("corp-app")}
        assert {(i, r["port"], r["origin"]) for i, r in rows.items()} == {
            ("corp-app-1", p1, "corp"),
            ("corp-app-2", p2, "corp"),
        }
        assert rows["corp-app-1"]["labels"]["version"] == "v1"
        corp = next(r for r in pilots.mesh.get("/debug/registry")["registries"] if r["name"] == "corp")
        assert corp["stale"] is False
        reach_through_sidecar(pilots.mesh.xds_port, "corp-app", {"corp-app-v1", "corp-app-v2"})
        c1.close()  # deregisters in the cluster
        wait_for(
            lambda: {i["id"] for i in pilots.instances("corp-app")} == {"corp-app-2"}, 10, "the deregistered one gone"
        )
        c2.die()  # its TTL check goes critical, then the cluster deregisters it
        wait_for(lambda: not pilots.instances("corp-app"), 15, "the lapsed one gone from the mesh")


def test_two_way_sync_copies_mesh_instances_into_the_cluster_and_removes_them(pilots: Pilots) -> None:
    port = free_port()
    pilots.put_mesh_instance(port)
    co = Client.python("consul", pilots.consul, "probe", "probe-1", free_port(), "v1", pilots.tmp / "probe.log")
    try:

        def found() -> list[dict[str, Any]]:
            return list(co.ask(cmd="discover", name="mesh-app")["instances"])

        rows = wait_for(found, 15, "the copy in the cluster")
        assert [(r["id"], r["port"], r["metadata"].get("version")) for r in rows] == [("m-1", port, "v3")]
        # labels that are not valid Consul meta keys travel as key=value tags
        assert "sofamesh.source=embedded" in rows[0]["tags"]
        # the copy read back from the cluster is not taken for a native (no loop, one instance)
        assert [i["id"] for i in pilots.instances("mesh-app")] == ["m-1"]
        resp = httpx.delete(f"{pilots.mesh.api_url}/v1/services/mesh-app/instances/m-1", timeout=5)
        assert resp.status_code in (200, 204), resp.text
        wait_for(lambda: not found(), 15, "the copy removed from the cluster")
    finally:
        co.close()
