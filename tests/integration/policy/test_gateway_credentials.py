"""Gateway ``credentialName`` served by Pilot's SDS: Kubernetes TLS Secrets applied to Pilot's
policy store (``sofamesh apply``) reach a real Envoy 1.40 and a sofamesh proxy, both gateway nodes
of one Pilot, over their ADS streams (``sds_config: {ads: {}}``). Checked with ``openssl s_client
-servername`` and curl: the served certificate is the Secret's; a rotated Secret is served to new
handshakes within seconds while an open connection keeps working (no restart); MUTUAL refuses a
client without a certificate; OPTIONAL_MUTUAL takes a client with or without one (not one of
another CA); a server naming an unknown Secret is absent while the other servers of its port
serve; reads never show the private key."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from http.client import HTTPResponse
from pathlib import Path

import httpx
import yaml

from sofamesh.certs import load_or_mint_ca, mint_workload
from sofamesh.testing import free_port
from tests.integration.gateway_tls import GatewayCerts, curl, gateway_certs, served_subject
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.xds.mesh import Sidecar
from tests.unit.pilot.policy.test_credentials import secret_doc

HOSTS = ("a.example.com", "b.example.com", "d.example.com")
PROXIES = {"envoy": "127.0.0.14", "sofamesh": "127.0.0.15"}
LABELS = {"istio": "ingressgateway"}
ROTATION_S = 10.0  # "within a few seconds", with room for a loaded machine


def policy(port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, credentialName: a-cert}}
  - port: {{number: {port}, name: https-b, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: MUTUAL, credentialName: "kubernetes://b-cert"}}
  - port: {{number: {port}, name: https-d, protocol: HTTPS}}
    hosts: [d.example.com]
    tls: {{mode: OPTIONAL_MUTUAL, credentialName: d-cert}}
  - port: {{number: {port}, name: https-c, protocol: HTTPS}}
    hosts: [c.example.com]
    tls: {{mode: SIMPLE, credentialName: no-such-secret}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [a.example.com, b.example.com, c.example.com, d.example.com]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: web}}}}]
"""


def secrets(certs: GatewayCerts) -> str:
    docs = [
        secret_doc("a-cert", certs.servers["a.example.com"]),
        secret_doc("b-cert", certs.servers["b.example.com"], ca=certs.ca.files.cert),
        secret_doc("d-cert", certs.servers["d.example.com"], ca=certs.ca.files.cert),
    ]
    return "\n---\n".join(yaml.safe_dump(d) for d in docs)


@contextlib.contextmanager
def gateways(
    tmp_path: Path, workers: int = 1, delta: bool = False
) -> Iterator[tuple[PilotProcess, GatewayCerts, int, Envoy, Sidecar]]:
    """Pilot, the web echo, both gateways (sofamesh with ``workers`` processes; both on delta xDS
    with ``delta``) with the Secrets and policy applied and answering on a.example.com; on leaving,
    neither proxy NACKed."""
    certs = gateway_certs(tmp_path, HOSTS)
    port = free_port()
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        echo = Echo("web")
        stack.callback(echo.stop)
        pilot.register("web", "web-1", address="127.0.0.1", port=echo.port, protocol="http")
        meta = {
            k: {"LABELS": LABELS, "NAMESPACE": "default", "sofamesh.gateway_address": a} for k, a in PROXIES.items()
        }
        envoy = Envoy(
            tmp_path,
            pilot,
            "DELTA_GRPC" if delta else "GRPC",
            metadata=meta["envoy"],
            node_id="router~127.0.0.14~edge-envoy.default~default.svc.cluster.local",
        )
        stack.callback(envoy.stop)
        gw = Sidecar(
            pilot.xds_port,
            "router~127.0.0.15~edge-sofamesh.default~default.svc.cluster.local",
            metadata=meta["sofamesh"],
            mode="delta" if delta else "sotw",
            args=("--workers", str(workers)) if workers > 1 else (),
        ).start()
        stack.callback(gw.stop)
        t = apply(pilot.api_url, stdin=secrets(certs) + "\n---\n" + policy(port))
        for name, address in PROXIES.items():
            follows(
                lambda a=address: curl(f"https://a.example.com:{port}/", port, certs, address=a)[1].startswith("200"),
                t,
                name,
                timeout=45,
            )
        yield pilot, certs, port, envoy, gw
        assert gw.dump()["xds"]["last_nack"] is None
        assert {v for k, v in envoy.stats().items() if k.endswith(".update_rejected")} == {0}


def _open(address: str, port: int, certs: GatewayCerts) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=certs.ca.files.cert)
    raw = socket.create_connection((address, port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="a.example.com")


def _get(conn: ssl.SSLSocket) -> int:
    """One keep-alive request on an open TLS connection; its status."""
    conn.sendall(b"GET /again HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
    resp = HTTPResponse(conn)  # type: ignore[arg-type]
    resp.begin()
    resp.read()
    return resp.status


def test_credentials_from_pilot_are_served_rotated_and_enforced_by_envoy_and_sofamesh(tmp_path: Path) -> None:
    with gateways(tmp_path) as (pilot, certs, port, _envoy, _gw):
        other = load_or_mint_ca(tmp_path / "other-ca")
        stranger = mint_workload(other, "spiffe://cluster.local/ns/default/sa/client", tmp_path / "other", "client")
        open_conns = {}
        for name, address in PROXIES.items():
            # the Secret's certificate, by SNI
            assert served_subject(port, "a.example.com", address=address) == "O = sofamesh, CN = a.example.com", name
            assert served_subject(port, "b.example.com", address=address) == "O = sofamesh, CN = b.example.com", name
            # MUTUAL with the Secret's ca.crt: no client certificate, no answer; with one, the route
            code, status, _ = curl(f"https://b.example.com:{port}/", port, certs, address=address)
            assert code != 0 and not status.startswith("200"), (name, code, status)
            code, status, body = curl(
                f"https://b.example.com:{port}/", port, certs, client=certs.client, address=address
            )
            assert status.startswith("200") and '"name": "web"' in body, (name, code, status)
            # OPTIONAL_MUTUAL: no certificate is fine, one from the Secret's CA too, another CA's is refused
            for client in (None, certs.client):
                code, status, _ = curl(f"https://d.example.com:{port}/", port, certs, client=client, address=address)
                assert status.startswith("200"), (name, client, code, status)
            code, status, _ = curl(f"https://d.example.com:{port}/", port, certs, client=stranger, address=address)
            assert code != 0 and not status.startswith("200"), (name, code, status)
            # the server naming no Secret is absent; the other servers of the port serve
            assert served_subject(port, "c.example.com", address=address) == "", name
            assert curl(f"https://a.example.com:{port}/", port, certs, address=address)[1].startswith("200"), name
            open_conns[name] = _open(address, port, certs)
            assert _get(open_conns[name]) == 200, name

        # reads never show the private key
        shown = httpx.get(f"{pilot.api_url}/api/v1/namespaces/default/secrets/a-cert", timeout=5).json()
        assert shown["data"]["tls.key"] == "<redacted>" and shown["data"]["tls.crt"]
        listed = httpx.get(f"{pilot.api_url}/api/v1/secrets", timeout=5).json()
        assert {i["data"].get("tls.key") for i in listed["items"]} == {"<redacted>"}
        got = subprocess.run(
            [sys.executable, "-m", "sofamesh", "get", "secret", "a-cert", "-o", "yaml", "--pilot", pilot.api_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert yaml.safe_load(got.stdout)["data"]["tls.key"] == "<redacted>"
        key = base64.b64encode(Path(certs.servers["a.example.com"].key).read_bytes()).decode()
        assert key not in got.stdout and key not in json.dumps(listed)

        # rotation: a new certificate for the same Secret, through the API
        rotated = mint_workload(
            certs.ca,
            "spiffe://cluster.local/ns/default/sa/a2",
            tmp_path / "rotated",
            "a-rotated",
            dns=("a.example.com",),
        )
        t = apply(pilot.api_url, stdin=yaml.safe_dump(secret_doc("a-cert", rotated)))
        took = {
            name: follows(
                lambda a=address: served_subject(port, "a.example.com", address=a) == "O = sofamesh, CN = a-rotated",
                t,
                f"{name} rotation",
                timeout=ROTATION_S,
            )
            for name, address in PROXIES.items()
        }
        print(f"rotated certificate served after: {took}")
        for name, address in PROXIES.items():
            code, status, _ = curl(f"https://a.example.com:{port}/", port, certs, address=address)
            assert status.startswith("200"), (name, code, status)  # the new chain verifies for a.example.com
            assert _get(open_conns[name]) == 200, name  # the listener kept serving: the old connection too
            open_conns[name].close()


def test_an_unknown_secret_that_appears_later_brings_its_server_up_in_every_worker(tmp_path: Path) -> None:
    """Both gateways on delta xDS; the sofamesh gateway runs two workers: the parent's xDS client
    relays the fetched secrets with the config, and a rotated one with the unchanged config, so
    every handshake sees the same."""
    with gateways(tmp_path, workers=2, delta=True) as (pilot, certs, port, _envoy, _gw):
        for address in PROXIES.values():
            assert served_subject(port, "c.example.com", address=address) == ""
        first = mint_workload(
            certs.ca, "spiffe://cluster.local/ns/default/sa/c", tmp_path / "c", "c.example.com", dns=("c.example.com",)
        )
        rotated = mint_workload(
            certs.ca, "spiffe://cluster.local/ns/default/sa/c", tmp_path / "c2", "c-rotated", dns=("c.example.com",)
        )
        for cert, cn in ((first, "c.example.com"), (rotated, "c-rotated")):
            t = apply(pilot.api_url, stdin=yaml.safe_dump(secret_doc("no-such-secret", cert)))
            subject = f"O = sofamesh, CN = {cn}"
            for name, address in PROXIES.items():
                follows(
                    lambda a=address, s=subject: served_subject(port, "c.example.com", address=a) == s,
                    t,
                    name,
                    timeout=ROTATION_S,
                )
            # SO_REUSEPORT spreads handshakes over both workers: every one gets the same certificate
            seen = {served_subject(port, "c.example.com", address=PROXIES["sofamesh"]) for _ in range(12)}
            assert seen == {subject}
            for name, address in PROXIES.items():
                code, status, _ = curl(f"https://c.example.com:{port}/", port, certs, address=address)
                assert status.startswith("200"), (name, code, status)
