"""Pilot + a sidecar over xDS + a real HTTP/1.1 upstream registered as ``http``: the cluster has no
HTTP/2 options, so (as in Envoy) HTTP/2 prior-knowledge requests go upstream as HTTP/1.1, and
HTTP/1.1 requests too."""

from __future__ import annotations

from pathlib import Path

import httpx

from sofamesh.testing import UpstreamServer
from tests.integration.xds.mesh import Sidecar, wait_for

SERVICE = "plain"


def test_http2_and_http1_requests_reach_an_http1_service(tmp_path: Path) -> None:
    from tests.integration.pilot.conftest import PilotProcess

    pilot = PilotProcess(tmp_path / "data").start()
    sc: Sidecar | None = None
    try:
        with UpstreamServer("u1") as up:
            host, port = up.address.rsplit(":", 1)
            pilot.register(SERVICE, "u1", address=host, port=int(port), protocol="http")
            sc = Sidecar(pilot.xds_port, "app-1").start()
            wait_for(
                lambda: sc is not None and sc.endpoints(f"|{SERVICE}") == {up.address},
                15,
                "the upstream in the sidecar's endpoints",
            )
            url = f"http://{sc.egress('http')}"
            with httpx.Client(http1=False, http2=True, timeout=10) as h2:  # prior knowledge over cleartext
                r = h2.get(f"{url}/who", headers={"host": SERVICE})
                assert (r.status_code, r.http_version, r.text) == (200, "HTTP/2", "u1 GET /who\n")
                body = b"x" * 100_000  # several DATA frames, one HTTP/1.1 body upstream
                r = h2.post(f"{url}/echo", headers={"host": SERVICE}, content=body)
                assert r.status_code == 200 and r.http_version == "HTTP/2", r.text
                assert str(len(body)) in r.text
            with httpx.Client(timeout=10) as h1:
                r = h1.get(f"{url}/who", headers={"host": SERVICE})
                assert (r.status_code, r.http_version, r.text) == (200, "HTTP/1.1", "u1 GET /who\n")
            assert up.paths.get("/who") == 2 and up.paths.get("/echo") == 1
            (cluster,) = [c for c in sc.dump()["config"]["clusters"] if c["name"].endswith(f"|{SERVICE}")]
            assert cluster["http_protocol"] == "http1" and cluster["protocol"] is None
    finally:
        if sc is not None:
            sc.stop()
        pilot.stop()
