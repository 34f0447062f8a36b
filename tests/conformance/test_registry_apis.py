"""Real Eureka, Nacos and Consul clients register with Pilot, which serves those registries' APIs:
PyPI py-eureka-client 0.13.3 (XML reads, JSON writes), npm nacos 2.6.3 (Nacos v1 HTTP) and PyPI
py-consul 1.8.0. Each registers two instances (metadata version v1 / v2), is discovered by the other
clients and through the Open Service Registry API, is reached through a sofamesh sidecar, and
leaves by deregistering or by letting its lease lapse. No Eureka, Nacos or Consul server can run
here (docs/registries.md): the clients are real, the servers are Pilot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import UpstreamServer, free_port
from tests.conformance.registry_api_peers import Client, reach_through_sidecar, require_clients
from tests.integration.registries.servers import PilotWithConfig
from tests.integration.xds.mesh import wait_for


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.nacos_port, self.consul_port = free_port(), free_port()
        self.pilot = PilotWithConfig(tmp / "pilot", [
            {"name": "embedded"},
            {"name": "eureka", "options": {"max_lease_s": 3}},
            {"name": "nacos", "options": {"address": f"127.0.0.1:{self.nacos_port}", "heartbeat_timeout_s": 11,
                                          "ip_delete_timeout_s": 13, "beat_interval_s": 1}},
            {"name": "consul", "options": {"address": f"127.0.0.1:{self.consul_port}"}},
        ])
        self.pilot.start()
        self.eureka = f"{self.pilot.api_url}/eureka/"
        self.nacos = f"127.0.0.1:{self.nacos_port}"
        self.consul = f"127.0.0.1:{self.consul_port}"
        self.tmp = tmp

    def instances(self, service: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.pilot.api_url}/v1/services/{service}/instances", timeout=5)
        return list(resp.json()["instances"]) if resp.status_code == 200 else []

    def versions(self, service: str, healthy_only: bool = True) -> set[str]:
        return {i["labels"].get("version", "") for i in self.instances(service)
                if not healthy_only or i["health"] == "healthy"}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    require_clients()
    m = Mesh(tmp_path)
    try:
        yield m
    finally:
        m.pilot.stop()


def _versions(rows: list[dict[str, Any]]) -> set[str]:
    return {r["metadata"].get("version", "") for r in rows}


def _through_sidecar(mesh: Mesh, service: str, expect: set[str]) -> None:
    reach_through_sidecar(mesh.pilot.xds_port, service, expect)


def test_py_eureka_client_instances_join_the_mesh_and_leave_by_cancel_and_by_lease(mesh: Mesh) -> None:
    with UpstreamServer("eu-v1") as up1, UpstreamServer("eu-v2") as up2:
        p1, p2 = (int(u.address.rsplit(":", 1)[1]) for u in (up1, up2))
        c1 = Client.python("eureka", mesh.eureka, "hello-eureka", "eu-1", p1, "v1", mesh.tmp / "eu1.log")
        c2 = Client.python("eureka", mesh.eureka, "hello-eureka", "eu-2", p2, "v2", mesh.tmp / "eu2.log")
        try:
            wait_for(lambda: mesh.versions("hello-eureka") == {"v1", "v2"}, 10, "both in the model")
            found = c1.ask(cmd="discover", name="hello-eureka")["instances"]
            assert {(r["id"], r["port"], r["status"]) for r in found} == {("eu-1", p1, "UP"), ("eu-2", p2, "UP")}
            assert _versions(found) == {"v1", "v2"}
            # the other APIs list it as well
            nacos_view = httpx.get(f"http://{mesh.nacos}/nacos/v1/ns/instance/list",
                                   params={"serviceName": "hello-eureka"}, timeout=5).json()
            assert {h["metadata"]["version"] for h in nacos_view["hosts"]} == {"v1", "v2"}
            _through_sidecar(mesh, "hello-eureka", {"eu-v1", "eu-v2"})
            # heartbeats keep both beyond the 3 s lease
            time.sleep(4)
            assert mesh.versions("hello-eureka") == {"v1", "v2"}
            c1.close()  # cancel
            wait_for(lambda: mesh.versions("hello-eureka") == {"v2"}, 10, "the cancelled one gone")
            # the survivor's own delta cycle sees it go
            wait_for(lambda: {r["id"] for r in c2.ask(cmd="cached", name="hello-eureka")["instances"]} == {"eu-2"},
                     10, "the client's cache without eu-1", interval=0.5)
            c2.die()
            wait_for(lambda: not mesh.instances("hello-eureka"), 10, "the lapsed one evicted")
        finally:
            c1.close()
            c2.close()


def test_npm_nacos_instances_join_the_mesh_and_leave_by_deregister_and_by_missed_beats(mesh: Mesh) -> None:
    with UpstreamServer("na-v1") as up1, UpstreamServer("na-v2") as up2:
        p1, p2 = (int(u.address.rsplit(":", 1)[1]) for u in (up1, up2))
        c1 = Client.nacos(mesh.nacos, "hello-nacos", p1, "v1", mesh.tmp / "na1.log")
        c2 = Client.nacos(mesh.nacos, "hello-nacos", p2, "v2", mesh.tmp / "na2.log")
        try:
            wait_for(lambda: mesh.versions("hello-nacos") == {"v1", "v2"}, 10, "both in the model")
            found = c1.ask(cmd="discover", name="hello-nacos")["instances"]
            assert {(r["port"], r["healthy"]) for r in found} == {(p1, True), (p2, True)}
            assert _versions(found) == {"v1", "v2"}
            c2.send(cmd="subscribe", name="hello-nacos")
            _through_sidecar(mesh, "hello-nacos", {"na-v1", "na-v2"})
            # npm nacos sends its first beat up to 10 s after registering (then every clientBeatInterval,
            # 1 s here): the timeout is 11 s, and beats keep both beyond it
            time.sleep(12)
            assert mesh.versions("hello-nacos") == {"v1", "v2"}
            c1.close()  # deregister
            wait_for(lambda: mesh.versions("hello-nacos") == {"v2"}, 10, "the deregistered one gone")
            c2.wait_for(lambda e: e["event"] == "changed" and _versions(e["instances"]) == {"v2"}, 15,
                        "the subscription without v1")
            c2.die()
            wait_for(lambda: mesh.versions("hello-nacos") == set(), 15, "unhealthy without beats")
            wait_for(lambda: not mesh.instances("hello-nacos"), 5, "removed without beats")
        finally:
            c1.close()
            c2.close()


def test_py_consul_instances_join_the_mesh_and_leave_by_deregister_and_by_ttl(mesh: Mesh) -> None:
    with UpstreamServer("co-v1") as up1, UpstreamServer("co-v2") as up2:
        p1, p2 = (int(u.address.rsplit(":", 1)[1]) for u in (up1, up2))
        c1 = Client.python("consul", mesh.consul, "hello-consul", "co-1", p1, "v1", mesh.tmp / "co1.log")
        c2 = Client.python("consul", mesh.consul, "hello-consul", "co-2", p2, "v2", mesh.tmp / "co2.log")
        try:
            wait_for(lambda: mesh.versions("hello-consul") == {"v1", "v2"}, 10, "both in the model")
            found = c1.ask(cmd="discover", name="hello-consul")["instances"]
            assert {(r["id"], r["port"]) for r in found} == {("co-1", p1), ("co-2", p2)}
            assert _versions(found) == {"v1", "v2"}
            _through_sidecar(mesh, "hello-consul", {"co-v1", "co-v2"})
            first = c2.ask(cmd="watch", name="hello-consul")
            c1.close()  # deregister
            changed = c2.ask(cmd="watch", name="hello-consul", index=first["index"])
            assert int(changed["index"]) > int(first["index"])
            assert _versions(changed["instances"]) == {"v2"}
            c2.die()  # its TTL check (2 s) turns critical, then it is deregistered 1 s later
            wait_for(lambda: not mesh.instances("hello-consul"), 10, "deregistered after a critical TTL")
        finally:
            c1.close()
            c2.close()


def test_each_client_discovers_what_the_others_and_the_open_service_registry_api_registered(mesh: Mesh) -> None:
    with UpstreamServer("osr") as up:
        host, port = up.address.rsplit(":", 1)
        resp = httpx.put(f"{mesh.pilot.api_url}/v1/services/from-osr/instances/osr-1",
                         json={"address": host, "port": int(port), "labels": {"version": "v3"}}, timeout=5)
        assert resp.status_code == 200, resp.text
        eu = Client.python("eureka", mesh.eureka, "from-eureka", "eu-9", free_port(), "v1", mesh.tmp / "eu.log")
        na = Client.nacos(mesh.nacos, "from-nacos", free_port(), "v1", mesh.tmp / "na.log")
        co = Client.python("consul", mesh.consul, "from-consul", "co-9", free_port(), "v1", mesh.tmp / "co.log")
        try:
            for service in ("from-osr", "from-eureka", "from-nacos", "from-consul"):
                wait_for(lambda s=service: any(i["health"] == "healthy" for i in mesh.instances(s)), 10, service)
                want = {"v3"} if service == "from-osr" else {"v1"}
                for client in (eu, na, co):
                    rows = client.ask(cmd="discover", name=service)["instances"]
                    assert _versions(rows) == want, (service, rows)
        finally:
            for c in (eu, na, co):
                c.close()
