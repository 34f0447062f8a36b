"""``sofamesh proxy-status``, ``proxy-config`` and ``describe service`` against a running mesh: a
real Pilot, real sidecar processes fed over xDS, an HTTP provider taking calls through them, and
one sidecar that NACKs the listener Pilot sends it (an HTTP filter it does not know)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import struct_pb2

from sofamesh.pilot.config import DashboardConfig
from sofamesh.pilot.xds.generator import LISTENER, NodeInfo, XdsResource
from sofamesh.testing import UpstreamServer, free_port
from tests.integration.xds.mesh import Sidecar, Stream, http_get, wait_for
from tests.integration.xds.test_pilot_nack import InProcessPilot
from tests.integration.xds.tiny_ads import pack, route_config, socket_address

NACKING = "app-nack"
UNKNOWN_FILTER = "acme.unknown-filter"


class UnknownFilterListener:
    """To node ``app-nack`` only: a listener whose HTTP filter chain names a filter no sidecar has."""

    type_url = LISTENER

    def __init__(self) -> None:
        self.armed = True
        self.address = f"127.0.0.1:{free_port()}"

    def scope(self, node: NodeInfo) -> Hashable:
        return node.id == NACKING

    def generate(self, mesh: Any, node: NodeInfo) -> Iterable[XdsResource]:
        if node.id != NACKING:
            return []
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix="acme",
            route_config=route_config("acme-routes", [("/", "outbound|80|web")]),
            http_filters=[
                hcm_pb2.HttpFilter(name=UNKNOWN_FILTER, typed_config=pack(struct_pb2.Struct())),
                hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())),
            ],
        )
        listener = listener_pb2.Listener(
            name="acme-unknown",
            address=socket_address(self.address),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm)
                        )
                    ]
                )
            ],
        )
        return [XdsResource("acme-unknown", listener)]


@dataclass
class Mesh:
    pilot: InProcessPilot
    good: Sidecar
    nacking: Sidecar
    upstream: UpstreamServer
    url: str
    rejected_listener: str  # the address of the listener app-nack rejects


def sofamesh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "sofamesh", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    gen = UnknownFilterListener()
    pilot = InProcessPilot(tmp_path_factory.mktemp("pilot"), gen)  # type: ignore[arg-type]
    p = pilot.pilot
    p.config = p.config.model_copy(
        update={
            "dashboard": DashboardConfig(
                scrape_interval_s=0.5, scrape_timeout_s=2.0, max_proxies_per_scrape=10, rate_window_s=30.0
            )
        }
    )
    with UpstreamServer("web-1") as upstream, pilot:
        host, port = upstream.address.rsplit(":", 1)
        pilot.api("PUT", "/v1/services/web/instances/w1", address=host, port=int(port), protocol="http")
        with Sidecar(p.xds_port, "app-1") as good, Sidecar(p.xds_port, NACKING) as nacking:
            wait_for(lambda: good.endpoints("|web") == {upstream.address}, 15, "web's endpoint in app-1")
            wait_for(lambda: nacking.dump()["xds"]["last_nack"], 15, "app-nack's NACK")
            yield Mesh(pilot, good, nacking, upstream, f"http://127.0.0.1:{p.api_port}", gen.address)


def test_proxy_status_shows_each_proxy_synced_and_the_nacking_one_nacked_with_its_error(mesh: Mesh) -> None:
    wait_for(
        lambda: (
            "NACKED" not in sofamesh("proxy-status", "app-1", "--pilot", mesh.url).stdout
            and "STALE" not in sofamesh("proxy-status", "app-1", "--pilot", mesh.url).stdout
        ),
        15,
        "app-1 in sync",
    )
    out = sofamesh("proxy-status", "--pilot", mesh.url).stdout
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:6] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS"]
    rows = {line.split()[0]: line for line in lines[1:3]}
    assert rows["app-1"].split()[2:6] == ["SYNCED", "SYNCED", "SYNCED", "SYNCED"]
    assert rows[NACKING].split()[3] == "NACKED"  # the LDS column
    # the columns are aligned: every row's LDS cell starts where the header's does
    col = lines[0].index("LDS")
    assert all(line[col:].startswith(("SYNCED", "NACKED")) for line in lines[1:3])
    nack_line = next(line for line in lines if line.startswith(f"{NACKING} LDS NACKED"))
    assert UNKNOWN_FILTER in nack_line and "is not supported" in nack_line
    doc = json.loads(sofamesh("proxy-status", "--pilot", mesh.url, "-o", "json").stdout)
    by = {r["proxy"]: r for r in doc["proxies"]}
    assert by[NACKING]["types"]["lds"]["state"] == "NACKED"
    assert UNKNOWN_FILTER in by[NACKING]["types"]["lds"]["error"]
    assert by["app-1"]["admin"] == mesh.good.config["admin"]["address"]


def test_proxy_config_shows_what_pilot_sent_the_proxy(mesh: Mesh) -> None:
    doc = json.loads(sofamesh("proxy-config", "cluster", "app-1", "--pilot", mesh.url, "-o", "json").stdout)
    sent = {r["name"] for r in doc["resources"]}
    applied = {c["name"] for c in mesh.good.dump()["config"]["clusters"]}
    assert doc["state"] == "SYNCED" and doc["exact"] is True
    assert sent == applied and any(n.endswith("|web") for n in sent)
    as_yaml = yaml.safe_load(sofamesh("proxy-config", "cluster", "app-1", "--pilot", mesh.url, "-o", "yaml").stdout)
    assert {r["name"] for r in as_yaml["resources"]} == sent and as_yaml["state"] == "SYNCED"
    table = sofamesh("proxy-config", "cluster", "app-1", "--pilot", mesh.url).stdout.splitlines()
    assert table[0].split() == ["NAME", "SERVICE", "PORT", "SUBSET", "DIRECTION", "TYPE"]
    web = next(line.split() for line in table if line.split() and line.split()[0].endswith("|web"))
    assert web[1] == "web" and web[4] == "outbound"
    endpoints = sofamesh("proxy-config", "endpoint", "app-1", "--pilot", mesh.url).stdout
    assert any(line.split()[:1] == [mesh.upstream.address] for line in endpoints.splitlines())
    routes = sofamesh("proxy-config", "route", "app-1", "--pilot", mesh.url).stdout
    assert "web" in routes
    # the NACKed listener is what Pilot sent app-nack, though app-nack does not serve it
    listeners = sofamesh("proxy-config", "listener", NACKING, "--pilot", mesh.url).stdout
    row = next(line.split() for line in listeners.splitlines() if line.startswith("acme-unknown"))
    assert f"{row[1]}:{row[2]}" == mesh.rejected_listener and UNKNOWN_FILTER not in row[3]
    assert "NACKED" in listeners.splitlines()[-1]


def test_describe_service_shows_instances_policies_and_callers(mesh: Mesh) -> None:
    r = httpx.put(
        f"{mesh.url}/apis/networking.istio.io/v1/namespaces/default/destinationrules/web",
        json={
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"host": "web", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
        },
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text

    def call() -> tuple[list[str], list[str]]:
        status, body = http_get(mesh.good.egress("http"), "web")
        return ([body.split()[0].decode()], []) if status == 200 else ([], [str(status)])

    with Stream(call) as stream:
        stream.wait_batches(20)
        doc = wait_for(
            lambda: (
                (d := json.loads(sofamesh("describe", "service", "web", "--pilot", mesh.url, "-o", "json").stdout))[
                    "callers"
                ]
                and d["callers"][0]["rps"] > 0
                and d
            ),
            20,
            "a caller of web with a call rate",
        )
        text = sofamesh("describe", "service", "web", "--pilot", mesh.url).stdout
    assert not stream.failures
    (inst,) = doc["instances"]
    assert (inst["registry"], inst["health"], inst["port"]) == (
        "embedded",
        "healthy",
        int(mesh.upstream.address.rsplit(":", 1)[1]),
    )
    assert {(p["kind"], p["name"]) for p in doc["policies"]} == {("DestinationRule", "web")}
    (caller,) = doc["callers"]
    assert caller["source"] == "app-1" and caller["error_rate"] == 0.0 and caller["requests_total"] > 0
    assert "Protocol:  http" in text
    assert ["DestinationRule", "default", "web"] in [line.split() for line in text.splitlines()]
    assert any(line.split()[:1] == ["app-1"] for line in text.split("Callers")[1].splitlines())


def test_an_unknown_proxy_or_service_is_an_error_naming_it(mesh: Mesh) -> None:
    out = sofamesh("proxy-config", "cluster", "nobody", "--pilot", mesh.url, check=False)
    assert out.returncode == 1 and "no connected proxy 'nobody'" in out.stderr
    out = sofamesh("describe", "service", "nothing", "--pilot", mesh.url, check=False)
    assert out.returncode == 1 and "unknown service 'nothing'" in out.stderr
    down = f"http://127.0.0.1:{free_port()}"
    out = sofamesh("proxy-status", "--pilot", down, check=False)
    assert out.returncode == 1 and f"cannot reach Pilot at {down}" in out.stderr


def test_ui_and_its_files_are_served_from_the_package(mesh: Mesh) -> None:
    page = httpx.get(f"{mesh.url}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/dashboard.js">' in page.text
    for name, ctype in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        r = httpx.get(f"{mesh.url}/ui/{name}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype) and r.content
    assert httpx.get(f"{mesh.url}/ui/../pilot.yaml", timeout=10).status_code == 404
    assert not list(Path(__file__).parents[3].glob("sofamesh/pilot/ui/*.min.js"))  # nothing built, nothing vendored


def test_failing_calls_show_as_the_callers_error_rate(mesh: Mesh) -> None:
    with UpstreamServer("flaky-1") as flaky:
        host, port = flaky.address.rsplit(":", 1)
        mesh.pilot.api("PUT", "/v1/services/flaky/instances/f1", address=host, port=int(port), protocol="http")
        wait_for(lambda: mesh.good.endpoints("|flaky") == {flaky.address}, 15, "flaky's endpoint in app-1")
        statuses = []
        for _ in range(20):
            try:  # /reset: the provider closes the connection without answering
                statuses.append(http_get(mesh.good.egress("http"), "flaky", "/reset")[0])
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        assert statuses and all(s >= 500 for s in statuses)

        def caller() -> dict[str, Any] | None:
            doc = json.loads(sofamesh("describe", "service", "flaky", "--pilot", mesh.url, "-o", "json").stdout)
            # the sidecar reports its counts as they come: wait for all 20 calls, then check them
            return next((c for c in doc["callers"] if c["errors"] > 0 and c["requests_total"] >= 20), None)

        edge = wait_for(caller, 20, "flaky's 20 failed calls in the call graph")
        assert edge["source"] == "app-1" and edge["errors_total"] == edge["requests_total"] == 20
        assert edge["error_rate"] == 1.0
        mesh.pilot.api("DELETE", "/v1/services/flaky/instances/f1")


def test_an_http1_edge_has_the_p99_of_a_provider_that_answers_slowly(mesh: Mesh) -> None:
    """HTTP/1 calls carry no per-RPC histogram: the edge's p99 is the cluster's upstream_rq_time."""
    with UpstreamServer("slow-1") as slow:
        host, port = slow.address.rsplit(":", 1)
        mesh.pilot.api("PUT", "/v1/services/slow/instances/s1", address=host, port=int(port), protocol="http")
        wait_for(lambda: mesh.good.endpoints("|slow") == {slow.address}, 15, "slow's endpoint in app-1")
        for _ in range(8):  # the provider answers after 200 ms
            assert http_get(mesh.good.egress("http"), "slow", "/slow?ms=200")[0] == 200
        (name,) = (n for n, c in mesh.good.stats()["clusters"].items() if n.endswith("|slow"))
        assert mesh.good.stats()["clusters"][name]["upstream_rq_time"]["count"] == 8

        def caller() -> dict[str, Any] | None:
            doc = json.loads(sofamesh("describe", "service", "slow", "--pilot", mesh.url, "-o", "json").stdout)
            return next((c for c in doc["callers"] if c["requests"] >= 8 and c["p99_ms"] is not None), None)

        edge = wait_for(caller, 20, "slow's p99 in the call graph")
        assert edge["source"] == "app-1" and 200 <= edge["p99_ms"] < 2000, edge
        graph = httpx.get(f"{mesh.url}/debug/graph", timeout=10).json()
        (g,) = (e for e in graph["edges"] if e["destination"] == "slow")
        assert 200 <= g["p99_ms"] < 2000
        mesh.pilot.api("DELETE", "/v1/services/slow/instances/s1")
