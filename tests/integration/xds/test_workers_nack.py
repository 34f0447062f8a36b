"""``sofamesh proxy --workers 2`` under a real Pilot: a listener the workers cannot bind (its port
held by another process: the parent binds nothing, so only the workers can refuse it) is NACKed to
Pilot with each worker's error, the previous config keeps serving in both workers, and the next
good config is ACKed and applied by both."""

from __future__ import annotations

import socket
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

from sofamesh.pilot.xds.generator import LISTENER, NodeInfo, XdsResource
from sofamesh.testing import UpstreamServer, free_port
from tests.integration.xds.mesh import Sidecar, http_get, wait_for
from tests.integration.xds.test_pilot_nack import InProcessPilot
from tests.integration.xds.tiny_ads import http_listener, route_config


class ExtraListener:
    """One more listener, at ``address``, once ``address`` is set."""

    type_url = LISTENER

    def __init__(self) -> None:
        self.address: str | None = None

    def scope(self, node: NodeInfo) -> Hashable:
        return None

    def generate(self, mesh: Any, node: NodeInfo) -> Iterable[XdsResource]:
        if self.address is None:
            return []
        return [
            XdsResource("acme-extra", http_listener("acme-extra", self.address, routes=route_config("acme-routes", [])))
        ]


def lds(pilot: InProcessPilot, node_id: str) -> dict[str, Any]:
    (node,) = [n for n in pilot.api("GET", "/debug/syncz")["nodes"] if n["node"] == node_id]
    return dict(node["types"]["lds"])


def test_a_listener_the_workers_cannot_bind_is_nacked_to_pilot_and_the_next_good_one_acked(tmp_path: Path) -> None:
    gen = ExtraListener()
    blocker = socket.socket()  # no SO_REUSEPORT: the workers' reuse-port bind on its port fails
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = f"127.0.0.1:{blocker.getsockname()[1]}"
    with (
        blocker,
        UpstreamServer("web-1") as upstream,
        InProcessPilot(tmp_path / "data", gen, "acme.extra-listener") as pilot,
    ):
        host, port = upstream.address.rsplit(":", 1)
        pilot.api("PUT", "/v1/services/web/instances/w1", address=host, port=int(port), protocol="http")
        with Sidecar(pilot.pilot.xds_port, "workers-nack", args=("--workers", "2")) as sc:
            wait_for(lambda: sc.endpoints("|web") == {upstream.address}, 10, "web's endpoint")
            assert http_get(sc.egress("http"), "web")[1].split()[0] == b"web-1"
            wait_for(lambda: lds(pilot, "workers-nack")["status"] == "ACKED", 10, "the first LDS ACKed")
            acked = lds(pilot, "workers-nack")["acked_version"]

            gen.address = taken
            pilot.push()
            nack = wait_for(lambda: lds(pilot, "workers-nack")["last_nack"], 15, "Pilot recording the NACK")
            state = lds(pilot, "workers-nack")
            assert state["status"] == "NACKED"
            # each worker's own error, named (the parent alone would have ACKed it)
            for worker in (0, 1):
                assert f"worker {worker}: " in nack["error"], nack
            assert nack["error"].count(f"cannot listen on '{taken}'") == 2, nack
            assert state["acked_version"] == acked  # what Pilot records as applied did not move
            assert nack["rejected_version"] != acked

            def settled() -> dict[str, Any] | None:
                d = sc.dump()
                relay = d["xds"]["relay_version"]
                return d if {w["relay_version"] for w in d["workers"]} == {relay} else None

            d = wait_for(settled, 10, "both workers on the parent's relay version")
            assert d["xds"]["relay_rejected"] == 1
            assert d["xds"]["types"]["lds"]["status"] == "NACKED"
            assert "acme-extra" not in {lst["name"] for lst in d["config"]["listeners"]}
            assert http_get(sc.egress("http"), "web")[1].split()[0] == b"web-1"

            free = f"127.0.0.1:{free_port()}"
            gen.address = free
            pilot.push()
            wait_for(lambda: lds(pilot, "workers-nack")["status"] == "ACKED", 15, "the good LDS ACKed")
            now = lds(pilot, "workers-nack")
            assert now["acked_version"] == now["sent_version"] != acked
            d = wait_for(settled, 10, "both workers on the parent's relay version")
            assert d["xds"]["relay_rejected"] == 1
            # the parent's config and each worker's serve the new listener
            assert {lst["address"] for lst in d["config"]["listeners"] if lst["name"] == "acme-extra"} == {free}
            for w in d["workers"]:
                assert w["versions"]["lds"] == now["acked_version"], w
            host, port = free.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5):
                pass
