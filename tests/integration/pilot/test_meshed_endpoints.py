"""Meshed endpoints learned from the sidecars that connect, and per-endpoint auto mTLS: a service
with one instance behind a sidecar (registered with no mesh label) and one plain instance; a
consumer through a sofamesh sidecar and through a real Envoy reaches both, with mTLS to the first
(its inbound listener is STRICT: plaintext would be refused) and plaintext to the second (a plain
HTTP server, which a TLS client could not talk to)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.testing import ProxyProcess, free_port
from tests.integration.policy.apply import apply

from .conftest import PilotProcess, wait_until
from .test_envoy import HttpBackend
from .test_inbound_security import EnvoySidecar, MeshSidecar, _peer_authentication
from .test_workload_certs import _token


def _bodies(url: str, n: int) -> set[str]:
    out = set()
    for _ in range(n):
        try:
            r = httpx.get(url, headers={"Host": "web"}, timeout=5)
        except httpx.HTTPError as exc:
            out.add(type(exc).__name__)
            continue
        out.add(r.text if r.status_code == 200 else str(r.status_code))
    return out


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Any]]:
    items: list[Any] = []
    try:
        yield items
    finally:
        for s in reversed(items):
            s.stop()


def test_a_partly_meshed_service_gets_mtls_to_its_sidecar_and_plaintext_to_its_plain_instance(
    tmp_path: Path, started: list[Any]
) -> None:
    pilot = PilotProcess(tmp_path / "data").start()
    started.append(pilot)
    meshed_app, plain_app = HttpBackend("meshed"), HttpBackend("plain")
    started += [meshed_app, plain_app]
    inbound = free_port()
    # No security.istio.io/tlsMode label: the instance is meshed when its sidecar connects.
    pilot.register(
        "web",
        "web-a",
        address="127.0.0.1",
        port=inbound,
        protocol="http",
        labels={"app": "web", "sofamesh.io/app-port": str(meshed_app.port)},
    )
    pilot.register("web", "web-b", address="127.0.0.1", port=plain_app.port, protocol="http")
    apply(pilot.api_url, stdin=_peer_authentication("STRICT"))

    consumer = MeshSidecar(pilot, tmp_path, "consumer").start()
    started.append(consumer)

    def web_cluster() -> dict[str, Any]:
        return next(c for c in consumer.xds_config()["clusters"] if c["name"].endswith("|web"))

    wait_until(lambda: _bodies(f"http://{consumer.egress('http')}/", 4) >= {"plain"}, 15, what="web-b reachable")
    assert not web_cluster().get("tls_matches") and web_cluster().get("tls") is None  # nothing meshed yet

    provider = ProxyProcess(
        {
            "agent": {"token_file": str(_token(pilot, "provider", tmp_path / "provider"))},
            "xds": {
                "address": f"127.0.0.1:{pilot.xds_port}",
                "node_id": "provider",
                "backoff_initial_ms": 100,
                "backoff_max_ms": 500,
                "metadata": {
                    "sofamesh.instances": "web-a",
                    "NAMESPACE": "default",
                    "SERVICE_ACCOUNT": "provider",
                    "sofamesh.outbound_port": free_port(),
                },
            },
            "drain_timeout_ms": 1000,
        },
        timeout=30,
    ).start()
    started.append(provider)
    wait_until(lambda: web_cluster().get("tls_matches"), 15, what="per-endpoint auto mTLS on the consumer")
    matches = web_cluster()["tls_matches"]
    assert [m["name"] for m in matches] == ["tlsMode-istio", "tlsMode-disabled"]
    assert matches[0]["tls"]["match_sans"] == ["spiffe://cluster.local/ns/default/sa/provider"]
    wait_until(
        lambda: _bodies(f"http://{consumer.egress('http')}/", 10) == {"meshed", "plain"},
        20,
        what="both instances through the sofamesh sidecar",
    )
    stats = provider.stats()["filters"][f"inbound|{inbound}|127.0.0.1|authn.mtls"]
    assert stats["mtls_authenticated"] >= 1 and stats.get("mtls_plaintext", 0) == 0, stats

    envoy = EnvoySidecar(pilot, tmp_path, "envoy-consumer", ())
    started.append(envoy)
    envoy_url = f"http://127.0.0.1:{envoy.outbound_port}/"
    wait_until(
        lambda: _bodies(envoy_url, 10) == {"meshed", "plain"}, 30, what=f"both instances through Envoy ({envoy.log})"
    )
    text = envoy.stats()
    assert "cluster.outbound|" in text
    after = provider.stats()["filters"][f"inbound|{inbound}|127.0.0.1|authn.mtls"]
    assert after["mtls_authenticated"] > stats["mtls_authenticated"], (stats, after)
    assert after.get("mtls_plaintext", 0) == 0
