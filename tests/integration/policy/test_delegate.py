"""VirtualService delegation enforced alike by a real Envoy and a sofamesh sidecar: a root
VirtualService's route delegating to a VirtualService (without hosts) in another namespace takes its
routes, each matching only under the root's match; a delegate route outside it is dropped, root
route fields the delegate leaves unset are inherited, and the delegate's short hosts resolve in its
own namespace."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_http_route_fields import POLICY as ROUTE_FIELDS
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.xds.mesh import Sidecar

SUBSETS = ROUTE_FIELDS.split("---")[0]  # DestinationRule web: subsets main and shadow
POLICY = (
    SUBSETS
    + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - name: root
    match: [{uri: {prefix: /d}}]
    headers: {request: {set: {x-root: "yes"}}}
    delegate: {name: web-routes, namespace: team}
  - name: ready
    match: [{uri: {exact: /ready}}]
    directResponse: {status: 204}
  - route: [{destination: {host: web, subset: main}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-routes, namespace: team}
spec:
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: web.default.svc.cluster.local, subset: shadow}}]
  - name: outside
    match: [{uri: {prefix: /x}}]
    route: [{destination: {host: web.default.svc.cluster.local, subset: shadow}}]
  - name: deeper
    match: [{uri: {prefix: /d/deep}}]
    headers: {request: {set: {x-from: delegate}}}
    route: [{destination: {host: web.default.svc.cluster.local, subset: shadow}}]
  - name: short-host
    match: [{uri: {prefix: /d/short}}]
    route: [{destination: {host: web, subset: main}}]
  - name: elsewhere
    route: [{destination: {host: web.default.svc.cluster.local, subset: main}}]
"""
)


def _status(port: int, path: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": "web"}, timeout=5).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture
def ports(tmp_path: Path) -> Iterator[dict[str, int]]:
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        for v in ("main", "shadow"):
            e = Echo(v)
            stack.callback(e.stop)
            pilot.register("web", v, address="127.0.0.1", port=e.port, protocol="http", labels={"version": v})
        envoy = Envoy(tmp_path, pilot, "DELTA_GRPC")
        stack.callback(envoy.stop)
        sidecar = Sidecar(pilot.xds_port, "delegate-sidecar").start()
        stack.callback(sidecar.stop)
        out = {"envoy": envoy.outbound_port, "sofamesh": sidecar.ports["http"]}
        t = apply(pilot.api_url, stdin=POLICY)
        follows(lambda: all(_status(p, "/ready") == 204 for p in out.values()), t, "the VirtualService", timeout=30)
        yield out
        assert sidecar.dump()["xds"]["last_nack"] is None
        assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}


@pytest.mark.parametrize("proxy", ["envoy", "sofamesh"])
def test_a_delegating_route_takes_the_delegates_routes_under_its_own_match(ports: dict[str, int], proxy: str) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{ports[proxy]}", headers={"Host": "web"}, timeout=5) as c:
        canary = c.get("/d", headers={"x-canary": "1"}).json()  # root /d AND the delegate's header
        assert (canary["name"], canary["headers"].get("x-root")) == ("shadow", "yes")  # root headers inherited
        deeper = c.get("/d/deep/1").json()
        assert (deeper["name"], deeper["headers"].get("x-from"), deeper["headers"].get("x-root")) == (
            "shadow",
            "delegate",
            None,
        )  # the delegate's own headers win over the root's
        # `web` in the delegate (namespace team) is web.team.svc.cluster.local: nothing serves it
        assert c.get("/d/short").status_code == 503
        plain = c.get("/d/other").json()  # the delegate's catch-all, still only under /d
        assert (plain["name"], plain["headers"].get("x-root")) == ("main", "yes")
        # outside /d: the delegate's routes do not apply (its /x route conflicts with the root: dropped)
        for path, headers in (("/x", {}), ("/other", {"x-canary": "1"})):
            got = c.get(path, headers=headers).json()
            assert (got["name"], got["headers"].get("x-root")) == ("main", None), path
