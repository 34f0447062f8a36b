"""A real SOFARegistry client (npm sofa-registry-node 0.0.1) publishes and subscribes against Pilot.

No SOFARegistry server runs here: these tests check Pilot's session-server side against the real
client only (what the client sends and what it accepts), not against a Java session server. End to
end: what sofa-registry-node publishes for a npm sofa-rpc-node provider is called through a sidecar
(fed by Pilot's xDS) by a sofa-rpc-node consumer.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import free_port
from tests.conformance import bolt_peers
from tests.conformance.sofaregistry_peers import RegistryClient, require_registry_client
from tests.integration.xds.mesh import Sidecar

DATA_ID = "com.example.EchoService:1.0@DEFAULT"
SERVICE = "com.example.EchoService:1.0"


class Pilot:
    def __init__(self, tmp: Path) -> None:
        self.api = free_port()
        self.xds = free_port()
        self.bolt = free_port()
        self.http = free_port()
        cfg = tmp / "pilot.yaml"
        cfg.write_text(
            f'xds: {{address: "127.0.0.1:{self.xds}"}}\napi: {{address: "127.0.0.1:{self.api}"}}\n'
            f"data_dir: {tmp / 'data'}\nregistries:\n  - name: embedded\n  - name: sofaregistry\n"
            f'    options: {{bolt_address: "127.0.0.1:{self.bolt}", http_address: "127.0.0.1:{self.http}"}}\n')
        self.log = tmp / "pilot.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sofamesh", "pilot", "-c", str(cfg), "--log-level", "DEBUG"],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.api}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"pilot not ready: {self.log.read_text()}")

    def get(self, path: str) -> Any:
        r = httpx.get(f"http://127.0.0.1:{self.api}{path}", timeout=5)
        r.raise_for_status()
        return r.json()

    def instances(self, service: str) -> list[dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{self.api}/v1/services/{service}/instances", timeout=5)
        return list(r.json().get("instances", [])) if r.status_code == 200 else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def pilot(tmp_path: Path) -> Iterator[Pilot]:
    require_registry_client()
    p = Pilot(tmp_path)
    try:
        yield p
    finally:
        p.stop()


def wait_until(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last {last!r})")


def zone_data(ev: dict[str, Any]) -> list[str]:
    return sorted(d for items in ev["value"]["zoneData"].values() for d in items)


def test_the_server_list_names_pilots_bolt_port(pilot: Pilot) -> None:
    r = httpx.get(f"http://127.0.0.1:{pilot.http}/api/servers/query",
                  params={"env": "dev", "zone": "DEFAULT_ZONE", "dataCenter": "dc", "appName": "a"}, timeout=5)
    assert r.status_code == 200
    assert r.text.split(";") == [f"127.0.0.1:{pilot.bolt}"]


def test_a_publish_reaches_a_subscriber_and_the_model_and_an_unregister_removes_it(
        pilot: Pilot, tmp_path: Path) -> None:
    url = "bolt://127.0.0.1:12200?version=1.0&weight=3"
    sub = RegistryClient(pilot.http, "consumer", tmp_path / "sub.log")
    pub = RegistryClient(pilot.http, "provider", tmp_path / "pub.log")
    try:
        sub.send(op="subscribe", dataId=DATA_ID)
        pub.send(op="publish", dataId=DATA_ID, data=[url])
        ev = sub.wait_for(lambda e: e["event"] == "data" and zone_data(e) == [url], 15, "the published url")
        assert list(ev["value"]["zoneData"]) == ["DEFAULT_ZONE"]

        insts = wait_until(lambda: pilot.instances(SERVICE), 10, "the instance in the model")
        assert [(i["address"], i["port"], i["weight"], i["version"], i["origin"]) for i in insts] == [
            ("127.0.0.1", 12200, 3, "1.0", "sofaregistry")]
        services = {s["name"]: s for s in pilot.get("/v1/services")["services"]}
        assert services[SERVICE]["protocol"] == "bolt"

        pub.send(op="unregister", dataId=DATA_ID)
        sub.wait_for(lambda e: e["event"] == "data" and zone_data(e) == [], 15, "the empty push")
        wait_until(lambda: not pilot.instances(SERVICE), 10, "the instance leaving the model")
    finally:
        pub.close()
        sub.close()


def test_a_publishers_instances_leave_when_its_connection_closes(pilot: Pilot, tmp_path: Path) -> None:
    sub = RegistryClient(pilot.http, "consumer", tmp_path / "sub.log")
    pub = RegistryClient(pilot.http, "provider", tmp_path / "pub.log")
    try:
        sub.send(op="subscribe", dataId=DATA_ID)
        pub.send(op="publish", dataId=DATA_ID, data=["bolt://127.0.0.1:12201", "bolt://127.0.0.1:12202"])
        sub.wait_for(lambda e: e["event"] == "data" and len(zone_data(e)) == 2, 15, "two urls")
        wait_until(lambda: len(pilot.instances(SERVICE)) == 2, 10, "two instances in the model")
        pub.close()
        sub.wait_for(lambda e: e["event"] == "data" and zone_data(e) == [], 15, "the empty push")
        wait_until(lambda: not pilot.instances(SERVICE), 10, "the instances leaving the model")
    finally:
        pub.close()
        sub.close()


def test_a_subscriber_that_arrives_later_gets_the_current_data(pilot: Pilot, tmp_path: Path) -> None:
    pub = RegistryClient(pilot.http, "provider", tmp_path / "pub.log")
    try:
        pub.send(op="publish", dataId="plain-data-id", data=["not a url"])
        wait_until(lambda: pilot.get("/debug/registry")["registries"][1]["publishers"], 15, "the publisher")
        sub = RegistryClient(pilot.http, "consumer", tmp_path / "sub.log")
        try:
            sub.send(op="subscribe", dataId="plain-data-id")
            sub.wait_for(lambda e: e["event"] == "data" and zone_data(e) == ["not a url"], 15, "the data")
            assert "plain-data-id" not in {s["name"] for s in pilot.get("/v1/services")["services"]}
        finally:
            sub.close()
    finally:
        pub.close()


def test_an_instance_published_by_sofa_registry_node_is_called_through_a_sidecar_by_sofa_rpc_node(
        pilot: Pilot, tmp_path: Path) -> None:
    iface = SERVICE.split(":")[0]
    with bolt_peers.node_provider(iface, "srp") as provider:
        pub = RegistryClient(pilot.http, "provider", tmp_path / "pub.log")
        try:
            pub.send(op="publish", dataId=DATA_ID, data=[f"bolt://127.0.0.1:{provider.port}?version=1.0"])
            [inst] = wait_until(lambda: pilot.instances(SERVICE), 15, "the published instance in the model")
            assert (inst["address"], inst["port"], inst["origin"]) == ("127.0.0.1", provider.port, "sofaregistry")
            with Sidecar(pilot.xds, "sofaregistry-consumer") as sidecar:
                wait_until(lambda: sidecar.endpoints(f"|{SERVICE}") == {provider.address}, 20,
                           "the published instance in the sidecar's endpoints")
                results = bolt_peers.node_consumer(sidecar.egress("bolt"), iface, [
                    {"method": "echo", "args": [f"hi{i}"], "timeout": 3000} for i in range(3)])
                assert [(r["ok"], r.get("result")) for r in results] == [(True, f"srp:hi{i}") for i in range(3)]
                # unpublished: the sidecar stops routing to it
                pub.send(op="unregister", dataId=DATA_ID)
                wait_until(lambda: not sidecar.endpoints(f"|{SERVICE}"), 20, "the instance leaving the sidecar")
        finally:
            pub.close()
