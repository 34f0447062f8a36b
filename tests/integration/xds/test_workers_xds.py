"""``sofamesh proxy --workers 2`` fed by a real Pilot over xDS: one ADS stream (the parent's), both
workers on the same config version, calls served by both, and a change followed by both."""

from __future__ import annotations

import json
from pathlib import Path

from sofamesh.testing import UpstreamServer
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.xds.mesh import Sidecar, http_get, wait_for

SERVICE = "hello"


def test_workers_share_one_xds_stream_and_apply_the_same_versions(tmp_path: Path) -> None:
    pilot = PilotProcess(tmp_path / "data").start()
    ups = [UpstreamServer(n).__enter__() for n in ("u1", "u2")]
    sidecar: Sidecar | None = None
    try:
        host, port = ups[0].address.rsplit(":", 1)
        pilot.register(SERVICE, "u1", address=host, port=int(port), protocol="http")
        sidecar = Sidecar(pilot.xds_port, "workers-1", args=("--workers", "2")).start()

        def dump() -> dict:
            return dict(json.loads(sidecar.get("/config_dump")))

        d = dump()
        assert len(d["workers"]) == 2
        relay = d["xds"]["relay_version"]
        assert relay >= 1 and {w["relay_version"] for w in d["workers"]} == {relay}
        assert {json.dumps(w["versions"], sort_keys=True) for w in d["workers"]} == {
            json.dumps({t: s["version"] for t, s in d["xds"]["types"].items()}, sort_keys=True)
        }
        # one stream: Pilot sees one node connected, not one per worker
        nodes = [n for n in pilot.get("/debug/syncz")["nodes"] if n["node"] == "workers-1"]
        assert len(nodes) == 1, nodes

        def served(n: int = 40) -> set[str]:
            out = set()
            for _ in range(n):
                status, body = http_get(sidecar.egress("http"), SERVICE, "/who")
                assert status == 200, body
                out.add(body.split()[0].decode())
            return out

        assert served() == {"u1"}
        workers_seen = {
            w["server"]["worker"]
            for w in json.loads(sidecar.get("/stats"))["workers"]
            if sum(c.get("downstream_cx_total", 0) for c in w["listeners"].values()) > 0
        }
        assert workers_seen == {0, 1}, workers_seen  # SO_REUSEPORT spread the connections
        host, port = ups[1].address.rsplit(":", 1)
        pilot.register(SERVICE, "u2", address=host, port=int(port), protocol="http")
        wait_for(lambda: dump()["xds"]["relay_version"] > relay, 10, "the change relayed")
        wait_for(
            lambda: (
                len({w["relay_version"] for w in dump()["workers"]}) == 1
                and dump()["workers"][0]["relay_version"] == dump()["xds"]["relay_version"]
            ),
            10,
            "both workers on the new version",
        )
        wait_for(lambda: served() == {"u1", "u2"}, 10, "both upstreams served through both workers")
    finally:
        if sidecar is not None:
            sidecar.stop()
        for u in ups:
            u.__exit__()
        pilot.stop()
