"""exportTo enforced per proxy namespace: a real Envoy in namespace ``team`` and a sofamesh sidecar
in namespace ``ops`` (node metadata ``NAMESPACE``, as Istio's); a VirtualService exported to one of
them routes that one, the other keeps the default routing; exported to the other, they swap. A
DestinationRule private to ``team`` wins there over the service namespace's one, and only there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.xds.mesh import Sidecar

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.default.svc.cluster.local
  subsets:
  - {name: main, labels: {version: main}}
  - {name: canary, labels: {version: canary}}
"""


def _canary_to(namespace: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  exportTo: [{namespace}]
  http:
  - route: [{{destination: {{host: web.default.svc.cluster.local, subset: canary}}}}]
"""


TEAM_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-inverted, namespace: team}
spec:
  host: web.default.svc.cluster.local
  exportTo: [.]
  subsets:
  - {name: canary, labels: {version: main}}
"""


def _names(port: int, n: int = 40) -> list[str]:
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Host": "web"}, timeout=5) as c:
        for _ in range(n):
            try:
                r = c.get("/")
            except httpx.HTTPError:
                return []  # the listener is not there yet
            if r.status_code != 200:
                return []
            out.append(r.json()["name"])
    return out


def _only(port: int, name: str = "canary") -> bool:
    return set(_names(port)) == {name}


def _default_routing(port: int) -> bool:
    return set(_names(port)) == {"main", "canary"}  # both instances of the service, as without policy


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[PilotProcess, dict[str, int], Envoy, Sidecar]]:
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        for v in ("main", "canary"):
            e = Echo(v)
            stack.callback(e.stop)
            pilot.register("web", v, address="127.0.0.1", port=e.port, protocol="http", labels={"version": v})
        envoy = Envoy(tmp_path, pilot, "GRPC", metadata={"NAMESPACE": "team"})
        stack.callback(envoy.stop)
        sidecar = Sidecar(pilot.xds_port, "export-to-sidecar", metadata={"NAMESPACE": "ops"}).start()
        stack.callback(sidecar.stop)
        ports = {"team": envoy.outbound_port, "ops": sidecar.ports["http"]}
        yield pilot, ports, envoy, sidecar
        assert sidecar.dump()["xds"]["last_nack"] is None
        assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}


def test_a_virtual_service_exported_to_one_namespace_routes_only_the_proxies_there(
    mesh: tuple[PilotProcess, dict[str, int], Envoy, Sidecar],
) -> None:
    pilot, ports, _envoy, _sidecar = mesh
    t = apply(pilot.api_url, stdin=RULE + "---" + _canary_to("team"))
    follows(lambda: _only(ports["team"]), t, "Envoy in team", timeout=30)
    follows(lambda: _default_routing(ports["ops"]), t, "the sidecar in ops", timeout=30)
    assert _only(ports["team"]) and _default_routing(ports["ops"])  # and it stays so

    t = apply(pilot.api_url, stdin=_canary_to("ops"))
    follows(lambda: _only(ports["ops"]), t, "the sidecar in ops", timeout=30)
    follows(lambda: _default_routing(ports["team"]), t, "Envoy in team", timeout=30)
    assert _only(ports["ops"]) and _default_routing(ports["team"])

    t = apply(pilot.api_url, stdin=_canary_to("'*'"))  # the default: every namespace
    follows(lambda: _only(ports["ops"]) and _only(ports["team"]), t, "both proxies", timeout=30)

    # team's own DestinationRule (private) names subset canary for the main instance: it wins for
    # team's proxy over the rule of the service's namespace; the proxy in ops never sees it
    t = apply(pilot.api_url, stdin=TEAM_RULE)
    follows(lambda: _only(ports["team"], "main"), t, "Envoy in team", timeout=30)
    assert _only(ports["ops"], "canary")


def _status(port: int, host: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": host}, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def test_a_service_entry_exported_to_its_own_namespace_exists_only_for_the_proxy_there(
    mesh: tuple[PilotProcess, dict[str, int], Envoy, Sidecar],
) -> None:
    pilot, ports, _envoy, _sidecar = mesh
    ext = Echo("ext")
    try:
        t = apply(
            pilot.api_url,
            stdin=f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: team}}
spec:
  hosts: [ext.example.com]
  exportTo: [.]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {ext.port}}}}}]
""",
        )
        follows(lambda: _status(ports["team"], "ext.example.com") == 200, t, "Envoy in team", timeout=30)
        assert _status(ports["ops"], "web") == 200  # the sidecar in ops has its routes, and no ext.example.com
        assert _status(ports["ops"], "ext.example.com") == 404
        assert {s["name"] for s in ext.seen} == {"ext"} and len(ext.seen) >= 1
    finally:
        ext.stop()
