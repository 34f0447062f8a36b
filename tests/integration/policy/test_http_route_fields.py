"""The VirtualService HTTP fields beyond bookinfo, enforced alike by a real Envoy and a sofamesh
sidecar: uri prefix / exact / regex, queryParams and method matches, rewrite, request and response
header set / add / remove, mirror (the copy's host ends in ``-shadow``), redirect, directResponse."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows
from tests.integration.xds.mesh import Sidecar, wait_for

POLICY = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: main, labels: {version: main}}
  - {name: shadow, labels: {version: shadow}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - name: api
    match:
    - uri: {prefix: /api}
      method: {exact: GET}
      queryParams: {q: {exact: "1"}}
    rewrite: {uri: /v2}
    headers:
      request: {set: {x-a: "1"}, remove: [x-b]}
      response: {add: {x-c: "2"}}
    mirror: {host: web, subset: shadow}
    route: [{destination: {host: web, subset: main}}]
  - name: moved
    match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - name: teapot
    match: [{uri: {regex: "/teapot.*"}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - route: [{destination: {host: web, subset: main}}]
"""


class Echo:
    """Answers every GET, POST, DELETE and OPTIONS (without reading a body) with what it received
    (path, headers) as JSON, with its name in the ``x-upstream`` response header; keeps what it saw."""

    def __init__(self, name: str) -> None:
        seen = self.seen = []  # type: list[dict[str, object]]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                got = {"name": name, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
                seen.append(got)
                body = json.dumps(got).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("x-upstream", name)
                self.end_headers()
                self.wfile.write(body)

            do_OPTIONS = do_POST = do_DELETE = do_GET  # a CORS preflight a proxy forwards; method matches

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[dict[str, int], dict[str, Echo]]]:
    pilot = PilotProcess(tmp_path / "data").start()
    echoes = {v: Echo(v) for v in ("main", "shadow")}
    envoy = sidecar = None
    try:
        for v, e in echoes.items():
            pilot.register("web", v, address="127.0.0.1", port=e.port, protocol="http", labels={"version": v})
        envoy = Envoy(tmp_path, pilot, "GRPC")
        sidecar = Sidecar(pilot.xds_port, "fields-sidecar").start()
        ports = {"envoy": envoy.outbound_port, "sofamesh": sidecar.ports["http"]}
        t = apply(pilot.api_url, stdin=POLICY)
        follows(lambda: all(httpx.get(f"http://127.0.0.1:{p}/teapot", headers={"Host": "web"}).status_code == 418
                            for p in ports.values()), t, "the VirtualService", timeout=20)
        yield ports, echoes
        assert sidecar.dump()["xds"]["last_nack"] is None
        assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}
    finally:
        if sidecar is not None:
            sidecar.stop()
        if envoy is not None:
            envoy.stop()
        pilot.stop()
        for e in echoes.values():
            e.stop()


@pytest.mark.parametrize("proxy", ["envoy", "sofamesh"])
def test_http_route_fields_are_enforced(mesh: tuple[dict[str, int], dict[str, Echo]], proxy: str) -> None:
    ports, echoes = mesh
    with httpx.Client(base_url=f"http://127.0.0.1:{ports[proxy]}", headers={"Host": "web"}, timeout=5) as c:
        shadow_before = len(echoes["shadow"].seen)
        r = c.get("/api/x", params={"q": "1"}, headers={"x-b": "drop me"})
        got = r.json()
        assert (got["name"], got["path"]) == ("main", "/v2/x?q=1")
        assert got["headers"]["x-a"] == "1" and "x-b" not in got["headers"]
        assert r.headers["x-c"] == "2"
        wait_for(lambda: len(echoes["shadow"].seen) > shadow_before, 5, "the mirrored copy")
        copy = echoes["shadow"].seen[-1]
        assert copy["path"] == "/v2/x?q=1" and str(copy["headers"]["host"]).startswith("web-shadow")  # type: ignore[index]

        plain = c.get("/api/x", params={"q": "2"}).json()  # queryParams no longer match: the default route
        assert (plain["name"], plain["path"]) == ("main", "/api/x?q=2") and "x-a" not in plain["headers"]

        moved = c.get("/old")
        assert moved.status_code == 302 and moved.headers["location"].endswith("/new")
        teapot = c.get("/teapot/pot")
        assert (teapot.status_code, teapot.text) == (418, "short and stout")
