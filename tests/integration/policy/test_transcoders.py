"""A VirtualService's ``sofamesh.io/transcoders`` annotation, through Pilot over xDS: routes of a
sofamesh sidecar answer HTTP/JSON with a Dubbo call to a real @dubbo.ts provider and with a gRPC call
to a real grpcio server (gRPC-JSON transcoding), while the same routes reach a real Envoy 1.40 as
optional per-filter config it accepts and ignores. (Admission of a malformed annotation:
tests/unit/pilot/policy/test_transcoders.py.)"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import httpx

from tests.conformance import dubbo_peers
from tests.conformance.peers.grpc.bookstore_build import build
from tests.conformance.test_grpc_json_transcoder import SERVER as BOOKSTORE
from tests.conformance.test_http2_peers import start_peer, stop_peer
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows, status
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.xds.mesh import Sidecar

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  annotations:
    sofamesh.io/transcoders: '{annotation}'
spec:
  hosts: [web]
  http:
  - name: books
    match: [{{uri: {{prefix: /shelves}}}}]
    route: [{{destination: {{host: books}}}}]
  - name: echo
    match: [{{uri: {{prefix: /echo}}}}]
    timeout: 5s
    route: [{{destination: {{host: {dubbo}}}}}]
  - name: ready
    match: [{{uri: {{exact: /ready}}}}]
    directResponse: {{status: 204}}
  - route: [{{destination: {{host: web}}}}]
"""


def _annotation(descriptor: bytes) -> str:
    return json.dumps(
        {
            "books": {
                "type": "grpc_json_transcoder",
                "config": {
                    "proto_descriptor_bin": base64.b64encode(descriptor).decode(),
                    "services": ["bookstore.Bookstore"],
                },
            },
            "echo": {
                "type": "transcoder",
                "config": {
                    "protocol": "dubbo",
                    "interface": dubbo_peers.SERVICE,
                    "version": "1.0.0",
                    "method": "echo",
                    "arguments": [{"name": "s", "type": "java.lang.String"}],
                },
            },
        }
    )


def test_pilot_configures_transcoding_routes_from_a_virtual_service_annotation(tmp_path: Path) -> None:
    dubbo_peers.require_dubbo_peers()
    descriptor = build(tmp_path / "bookstore").read_bytes()
    pilot = PilotProcess(tmp_path / "data").start()
    books = start_peer([sys.executable, str(BOOKSTORE)], timeout=60)
    web = Echo("web")
    envoy: Envoy | None = None
    sidecar: Sidecar | None = None
    try:
        with dubbo_peers.Provider("p1") as provider:
            pilot.register("web", "w1", address="127.0.0.1", port=web.port, protocol="http")
            pilot.register("books", "b1", address="127.0.0.1", port=books.port, protocol="grpc")
            host, port = provider.address.rsplit(":", 1)
            pilot.register(dubbo_peers.SERVICE, "d1", address=host, port=int(port), protocol="dubbo")
            sidecar = sc = Sidecar(pilot.xds_port, "edge").start()
            envoy = Envoy(tmp_path, pilot, "GRPC")
            t = apply(pilot.api_url, stdin=VS.format(annotation=_annotation(descriptor), dubbo=dubbo_peers.SERVICE))
            ports = {"sofamesh": sc.ports["http"], "envoy": envoy.outbound_port}
            follows(
                lambda: all(status(p, "/ready") == 204 for p in ports.values()), t, "the VirtualService", timeout=30
            )
            with httpx.Client(
                base_url=f"http://127.0.0.1:{sc.ports['http']}", headers={"Host": "web"}, timeout=10
            ) as c:
                r = c.get("/shelves/2")
                assert (r.status_code, r.json()) == (200, {"id": "2", "theme": "history"})
                r = c.get("/shelves/99")
                assert (r.status_code, r.json()) == (404, {"code": 5, "message": "shelf 99 not found"})
                r = c.post("/echo", json=["through pilot"])
                assert (r.status_code, r.json()) == (200, "through pilot"), r.text
                r = c.post("/echo", json=[1, 2])
                assert r.status_code == 400 and r.json()["error"] == "bad_body"
                assert c.get("/other").headers["x-upstream"] == "web"  # a route without one is untouched
            # the Envoy took the same routes (the optional config ignored): its /shelves request reaches
            # the gRPC server as plain HTTP, not transcoded
            with httpx.Client(
                base_url=f"http://127.0.0.1:{envoy.outbound_port}", headers={"Host": "web"}, timeout=10
            ) as c:
                assert c.get("/other").headers["x-upstream"] == "web"
                assert c.get("/shelves/2").headers.get("content-type") != "application/json"
            assert sc.dump()["xds"]["last_nack"] is None
            assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}
    finally:
        for stop in (envoy.stop if envoy else None, sidecar.stop if sidecar else None, web.stop, pilot.stop):
            if stop is not None:
                stop()
        stop_peer(books)
