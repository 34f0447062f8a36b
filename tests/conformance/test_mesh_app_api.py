"""anthunder 0.8.1's mesh client publishes and subscribes through a sidecar's SOFA mesh app API.

A Pilot (its Open Service Registry API), a sofamesh proxy with a Bolt egress listener and the
``mesh_app_api`` extension, an anthunder AioListener that publishes itself through the app API and
an anthunder AioClient that subscribes through it and calls the egress listener.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.bolt_peers import ANTHUNDER_PY, PEERS, require_anthunder
from tests.integration.pilot.conftest import PilotProcess

INTERFACE = "com.example.mesh.EchoService:1.0"


@pytest.fixture
def pilot_api(tmp_path: Path) -> Iterator[str]:
    """A Pilot's Open Service Registry API URL; the test starts only once Pilot says it is ready."""
    pilot = PilotProcess(tmp_path / "pilot").start()  # fails the test if Pilot is not ready in 20 s
    try:
        yield pilot.api_url
    finally:
        pilot.stop()


def instances(pilot: str) -> list[dict[str, object]]:
    r = httpx.get(f"{pilot}/v1/services/{INTERFACE}/instances", timeout=5)
    return list(r.json().get("instances", [])) if r.status_code == 200 else []


def sidecar_config(api_port: int, egress_port: int, pilot_api: str) -> dict[str, object]:
    return {
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "egress", "address": f"127.0.0.1:{egress_port}", "protocols": ["bolt"],
                       "routes": []}],
        "clusters": [],
        "extensions": {"mesh_app_api": {"address": f"127.0.0.1:{api_port}", "pilot_api": pilot_api,
                                        "poll_ms": 200}},
    }


def test_an_anthunder_consumer_reaches_a_provider_published_through_the_app_api(pilot_api: str) -> None:
    require_anthunder()
    api_port, egress_port, provider_port = free_port(), free_port(), free_port()
    config = sidecar_config(api_port, egress_port, pilot_api)
    script = str(PEERS / "anthunder_mesh_app.py")
    with ProxyProcess(config) as proxy:
        provider = subprocess.Popen([str(ANTHUNDER_PY), script, str(api_port), str(egress_port), "provider",
                                     str(provider_port), INTERFACE, "p1"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert provider.stdout is not None
            line = provider.stdout.readline().decode().strip()
            assert line == "PUBLISHED", (line, provider.stderr.read().decode() if provider.poll() is not None else "")
            got = instances(pilot_api)
            assert [(i["address"], i["port"], i["version"], i["labels"]["app"]) for i in got] == [
                ("127.0.0.1", provider_port, "4.0", "sofamesh-mesh-provider")]

            out = subprocess.run([str(ANTHUNDER_PY), script, str(api_port), str(egress_port), "consumer", INTERFACE],
                                 capture_output=True, timeout=30)
            result = json.loads(out.stdout.decode().strip().splitlines()[-1])
            assert result == {"ok": True, "result": "p1:hi"}, (result, out.stderr.decode()[-2000:], proxy.log())
            clusters = proxy.get("/clusters").decode()
            assert f"mesh_app.{INTERFACE}" in clusters
        finally:
            if provider.stdin is not None:
                provider.stdin.close()
            try:
                provider.wait(timeout=10)
            except subprocess.TimeoutExpired:
                provider.kill()
                provider.wait(timeout=5)
            for stream in (provider.stdout, provider.stderr):
                if stream is not None:
                    stream.close()
        deadline = time.monotonic() + 10
        while instances(pilot_api) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert instances(pilot_api) == [], "unpublish did not remove the instance from Pilot"


def wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_subscription_follows_pilot_and_an_unsubscribe_removes_the_route(pilot_api: str) -> None:
    api_port, egress_port = free_port(), free_port()
    app = f"http://127.0.0.1:{api_port}"
    with ProxyProcess(sidecar_config(api_port, egress_port, pilot_api)) as proxy:
        cluster = f"mesh_app.{INTERFACE}"
        r = httpx.post(f"{app}/services/subscribe", json={"serviceName": INTERFACE}, timeout=5)
        assert r.status_code == 200 and r.json() == {"success": True}
        assert cluster not in proxy.get("/clusters").decode()  # nothing published yet: no route

        r = httpx.put(f"{pilot_api}/v1/services/{INTERFACE}/instances/i1",
                      json={"address": "127.0.0.1", "port": 12345, "protocol": "bolt"}, timeout=5)
        assert r.status_code == 200, r.text
        wait_for(lambda: "127.0.0.1:12345" in proxy.get("/clusters").decode(), 10, "the polled endpoint")

        r = httpx.post(f"{app}/services/unsubscribe", json={"serviceName": INTERFACE}, timeout=5)
        assert r.json() == {"success": True}
        assert cluster not in proxy.get("/clusters").decode()


def test_a_published_instance_keeps_its_lease_while_the_sidecar_runs_and_loses_it_when_it_dies(
        pilot_api: str) -> None:
    api_port, egress_port = free_port(), free_port()
    config = sidecar_config(api_port, egress_port, pilot_api)
    config["extensions"]["mesh_app_api"]["ttl_s"] = 1  # type: ignore[index]
    proxy = ProxyProcess(config, expect_exit=-signal.SIGKILL).start()
    try:
        r = httpx.post(f"http://127.0.0.1:{api_port}/services/publish",
                       json={"serviceName": INTERFACE, "port": "23456",
                             "providerMetaInfo": {"appName": "a1", "version": "4.0"}}, timeout=5)
        assert r.json() == {"success": True}
        time.sleep(2.5)  # more than two lease lengths: only heartbeats keep it
        assert [i["port"] for i in instances(pilot_api)] == [23456]
    finally:
        proxy.signal(signal.SIGKILL)  # no shutdown hook: only the lease can remove the instance
        proxy.stop()
    wait_for(lambda: not instances(pilot_api), 10, "the lease to run out")


def test_a_malformed_call_answers_success_false_with_a_message(pilot_api: str) -> None:
    api_port, egress_port = free_port(), free_port()
    with ProxyProcess(sidecar_config(api_port, egress_port, pilot_api)):
        r = httpx.post(f"http://127.0.0.1:{api_port}/services/publish", json={"port": "1"}, timeout=5)
        assert r.status_code == 200
        assert r.json()["success"] is False and "serviceName" in r.json()["errorMessage"]
