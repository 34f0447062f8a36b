"""PyPI py-eureka-client 0.13.3 and Eureka's ``lastDirtyTimestamp``: when the registration Pilot holds
is older than the client's (here: overwritten with an older document), the client's next renewal
gets 404 and it registers its own document again, as against a real Eureka server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sofamesh.testing import free_port
from tests.conformance.registry_api_peers import Client, require_clients
from tests.integration.registries.servers import PilotWithConfig
from tests.integration.xds.mesh import wait_for


@pytest.fixture
def pilot(tmp_path: Path) -> Iterator[PilotWithConfig]:
    require_clients()
    p = PilotWithConfig(tmp_path / "pilot", [{"name": "embedded"}, {"name": "eureka", "options": {"max_lease_s": 3}}])
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_an_older_registration_makes_the_clients_renewal_404_and_it_registers_again(
    pilot: PilotWithConfig, tmp_path: Path
) -> None:
    def versions() -> list[str]:
        resp = httpx.get(f"{pilot.api_url}/v1/services/dirty-app/instances", timeout=5)
        return [i["labels"].get("version", "") for i in resp.json()["instances"]] if resp.status_code == 200 else []

    port = free_port()
    eureka = f"{pilot.api_url}/eureka/"
    client = Client.python("eureka", eureka, "dirty-app", "d-1", port, "v1", tmp_path / "client.log")
    try:
        wait_for(lambda: versions() == ["v1"], 10, "the client's registration")
        older = {
            "instanceId": "d-1",
            "hostName": "127.0.0.1",
            "app": "DIRTY-APP",
            "ipAddr": "127.0.0.1",
            "port": {"$": port, "@enabled": "true"},
            "status": "UP",
            "metadata": {"version": "v0"},
            "dataCenterInfo": {"name": "MyOwn"},
            "leaseInfo": {"durationInSecs": 3},
            "lastDirtyTimestamp": "1",
        }
        resp = httpx.post(f"{eureka}apps/DIRTY-APP", json={"instance": older}, timeout=5)
        assert resp.status_code == 204 and versions() == ["v0"]
        # the client renews every second with its newer timestamp: 404, then it registers v1 again
        wait_for(lambda: versions() == ["v1"], 10, "the client's own document back")
        time.sleep(3)  # and its renewals are accepted from then on (the 3 s lease would lapse otherwise)
        assert versions() == ["v1"]
    finally:
        client.close()
