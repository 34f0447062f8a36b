"""An ISTIO_MUTUAL gateway server: a real Envoy 1.40 (its certificate from ``sofamesh agent`` over
SDS) and a sofamesh proxy (its own agent), both gateway nodes of one Pilot, terminate TLS with the
mesh certificate Pilot's CA issued them and require a client certificate from the same CA: a
client holding a mesh certificate reaches the route through either, one without is refused."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
from collections.abc import Iterator
from http.client import HTTPResponse
from pathlib import Path

from sofamesh.testing import ProxyProcess, free_port
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_inbound_security import EnvoySidecar
from tests.integration.pilot.test_workload_certs import _client_cert, _token
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_http_route_fields import Echo

PROXIES = {"envoy": "127.0.0.16", "sofamesh": "127.0.0.17"}
NODE = "router~{address}~edge-{name}.default~default.svc.cluster.local"
HOST = "web.example.com"
TD = "spiffe://cluster.local/ns/default/sa"


def policy(port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https-mesh, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [{HOST}]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: web}}}}]
"""


def call(address: str, port: int, root: str, cert: tuple[str, str] | None) -> tuple[int, str]:
    """(status, the gateway's URI SAN) of one request with SNI ``HOST``, the gateway's certificate
    verified against Pilot's root; ``(0, error)`` when the handshake or request fails."""
    ctx = ssl.create_default_context(cafile=root)
    ctx.check_hostname = False  # mesh certificates name workloads (URI SAN), not hosts
    if cert is not None:
        ctx.load_cert_chain(*cert)
    try:
        with (
            socket.create_connection((address, port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=HOST) as conn,
        ):
            san = [v for k, v in conn.getpeercert().get("subjectAltName", ()) if k == "URI"]
            conn.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            resp = HTTPResponse(conn)  # type: ignore[arg-type]
            resp.begin()
            resp.read()
            return resp.status, ",".join(san)
    except (OSError, ssl.SSLError) as exc:
        return 0, str(exc)


@contextlib.contextmanager
def gateways(tmp_path: Path) -> Iterator[tuple[int, str, tuple[str, str]]]:
    """Pilot, the web echo, both gateways with their agents, the policy applied and answering a
    mesh client: (port, Pilot's root file, the client's certificate and key)."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        echo = Echo("web")
        stack.callback(echo.stop)
        pilot.register("web", "web-1", address="127.0.0.1", port=echo.port, protocol="http")
        meta = {
            name: {"LABELS": {"istio": "ingressgateway"}, "NAMESPACE": "default", "sofamesh.gateway_address": address}
            for name, address in PROXIES.items()
        }
        envoy = EnvoySidecar(
            pilot,
            tmp_path,
            "edge-envoy",
            (),
            node_id=NODE.format(address=PROXIES["envoy"], name="envoy"),
            metadata=meta["envoy"],
        )
        stack.callback(envoy.stop)
        sofamesh = ProxyProcess(
            {
                "agent": {
                    "ca_address": f"127.0.0.1:{pilot.xds_port}",
                    "token_file": str(_token(pilot, "edge-sofamesh", tmp_path / "edge-sofamesh")),
                },
                "xds": {
                    "address": f"127.0.0.1:{pilot.xds_port}",
                    "node_id": NODE.format(address=PROXIES["sofamesh"], name="sofamesh"),
                    "metadata": {**meta["sofamesh"], "sofamesh.outbound_port": free_port()},
                    "backoff_initial_ms": 100,
                    "backoff_max_ms": 500,
                    "initial_fetch_timeout_ms": 10000,
                },
            },
            timeout=30,
        ).start()
        stack.callback(sofamesh.stop)
        root = str(pilot.data_dir / "security" / "root-cert.pem")
        client = _client_cert(pilot, tmp_path, "client")
        t = apply(pilot.api_url, stdin=policy(port))
        for name, address in PROXIES.items():
            follows(lambda a=address: call(a, port, root, client)[0] == 200, t, name, timeout=45)
        yield port, root, client
        assert json.loads(sofamesh.get("/config_dump"))["xds"]["last_nack"] is None
        rejected = re.findall(r"\.update_rejected: (\d+)", envoy.stats())
        assert rejected and set(rejected) == {"0"}


def test_an_istio_mutual_gateway_server_lets_mesh_clients_through_envoy_and_sofamesh(tmp_path: Path) -> None:
    with gateways(tmp_path) as (port, root, client):
        for name, address in PROXIES.items():
            status, san = call(address, port, root, client)
            assert (status, san) == (200, f"{TD}/edge-{name}"), name  # its own mesh identity, from Pilot's CA
            status, error = call(address, port, root, None)
            assert status == 0, (name, error)  # no client certificate: refused
