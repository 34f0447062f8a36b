"""An Istio Gateway served alike by a real Envoy 1.40 and a sofamesh proxy, both gateway nodes
(``router~`` ids, labels ``istio: ingressgateway``) of one Pilot, each on its own loopback address:
two HTTPS servers on one port with their own certificates (SNI), one of them MUTUAL, ALPN h2;
httpsRedirect on the HTTP port; PASSTHROUGH by SNI to a real TLS server. Checked with curl
(``--resolve``) and ``openssl s_client -servername``."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

from sofamesh.testing import free_port
from tests.integration.gateway_nodes import assert_accepted, start_gateways
from tests.integration.gateway_tls import GatewayCerts, curl, gateway_certs, negotiated_alpn, served_subject
from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import HttpBackend
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.side_by_side import side_by_side, web_policy
from tests.integration.policy.test_http_route_fields import Echo
from tests.integration.websocket_peers import WsEcho, ws_connect

HOSTS = ("a.example.com", "b.example.com", "vault.example.com")
PROXIES = {"envoy": "127.0.0.12", "sofamesh": "127.0.0.13"}
LABELS = {"istio": "ingressgateway"}


def policy(certs: GatewayCerts, ports: dict[str, int]) -> str:
    a, b = certs.servers["a.example.com"], certs.servers["b.example.com"]
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {ports["https"]}, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {a.cert}, privateKey: {a.key}}}
  - port: {{number: {ports["https"]}, name: https-b, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {b.cert}, privateKey: {b.key}, caCertificates: {certs.ca.files.cert}}}
  - port: {{number: {ports["https"]}, name: https-vault, protocol: HTTPS}}
    hosts: [vault.example.com]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {ports["http"]}, name: http, protocol: HTTP}}
    hosts: [a.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: {ports["http"]}, name: http-b, protocol: HTTP}}
    hosts: [b.example.com]
  - port: {{number: {ports["tls"]}, name: tls, protocol: TLS}}
    hosts: [vault.example.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [edge]
  http:
  - match: [{{uri: {{prefix: /chat}}}}]
    route: [{{destination: {{host: chat}}}}]
  - match: [{{uri: {{prefix: /v2}}}}]
    route: [{{destination: {{host: web, subset: v2}}}}]
  - route: [{{destination: {{host: web, subset: v1}}}}]
    corsPolicy: {{allowOrigins: [{{exact: "https://shop.example"}}], allowMethods: [GET, PUT], maxAge: 1h}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vault, namespace: default}}
spec:
  hosts: [vault.example.com]
  gateways: [default/edge]
  tls:
  - match: [{{sniHosts: [vault.example.com]}}]
    route: [{{destination: {{host: vault}}}}]
"""


@contextlib.contextmanager
def gateways(tmp_path: Path) -> Iterator[tuple[PilotProcess, GatewayCerts, dict[str, int]]]:
    """Pilot, the web echoes (v1, v2), the TLS backend, and both gateways with the policy applied
    and answering; on leaving, neither proxy NACKed."""
    certs = gateway_certs(tmp_path, HOSTS)
    ports = {"https": free_port(), "http": free_port(), "tls": free_port()}
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        for v in ("v1", "v2"):
            echo = Echo(v)
            stack.callback(echo.stop)
            pilot.register("web", v, address="127.0.0.1", port=echo.port, protocol="http", labels={"version": v})
        vault = certs.servers["vault.example.com"]
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(vault.cert, vault.key)
        backend = HttpBackend("vault", tls)  # what PASSTHROUGH reaches, TLS untouched
        stack.callback(backend.stop)
        pilot.register("vault", "vault-1", address="127.0.0.1", port=backend.port, protocol="tcp")
        chat = WsEcho("chat")
        stack.callback(chat.stop)
        pilot.register("chat", "chat-1", address="127.0.0.1", port=chat.port, protocol="http")
        envoy, gw = start_gateways(stack, tmp_path, pilot, PROXIES, LABELS)
        t = apply(pilot.api_url, stdin=policy(certs, ports))
        for name, address in PROXIES.items():
            follows(
                lambda a=address: curl(f"https://a.example.com:{ports['https']}/", ports["https"], certs, address=a)[
                    1
                ].startswith("200"),
                t,
                name,
                timeout=45,
            )
        yield pilot, certs, ports
        assert_accepted(envoy, gw)


def test_https_servers_on_one_port_redirect_and_passthrough_behave_alike_on_envoy_and_sofamesh(tmp_path: Path) -> None:
    with gateways(tmp_path) as (_pilot, certs, ports):
        https, http, tls = ports["https"], ports["http"], ports["tls"]
        for name, address in PROXIES.items():
            # SNI picks the certificate: two names, two certificates on one port
            assert "CN = a.example.com" in served_subject(https, "a.example.com", address=address), name
            assert "CN = b.example.com" in served_subject(https, "b.example.com", address=address), name
            assert negotiated_alpn(https, "a.example.com", "h2,http/1.1", address=address) == "h2", name

            code, status, body = curl(f"https://a.example.com:{https}/v2/x", https, certs, address=address)
            assert (code, status.split()[0]) == (0, "200") and '"name": "v2"' in body, (name, code, status, body)
            code, status, body = curl(f"https://a.example.com:{https}/", https, certs, http2=True, address=address)
            assert (code, status.split()[:2]) == (0, ["200", "2"]) and '"name": "v1"' in body, (name, status)

            # MUTUAL: no client certificate, no answer; with one, the route
            code, _status, _body = curl(f"https://b.example.com:{https}/", https, certs, address=address)
            assert code != 0, name
            code, status, body = curl(
                f"https://b.example.com:{https}/", https, certs, client=certs.client, address=address
            )
            assert (code, status.split()[0]) == (0, "200") and '"name": "v1"' in body, (name, code, status)

            # httpsRedirect: 301 to https for a.example.com; b.example.com's plain server is routed
            code, status, _ = curl(f"http://a.example.com:{http}/path?q=1", http, address=address)
            # Envoy's require_tls keeps the request's Host, port included
            assert (code, status) == (0, f"301 1.1 https://a.example.com:{http}/path?q=1"), (name, status)
            code, status, body = curl(f"http://b.example.com:{http}/", http, address=address)
            assert (code, status.split()[0]) == (0, "200") and '"name": "v1"' in body, (name, status)

            # PASSTHROUGH: the backend's own certificate and answer, by SNI
            assert "CN = vault.example.com" in served_subject(tls, "vault.example.com", address=address), name
            code, status, body = curl(f"https://vault.example.com:{tls}/", tls, certs, address=address)
            assert (code, status.split()[0], body) == (0, "200", "vault"), (name, code, status, body)
            assert served_subject(tls, "other.example.com", address=address) == "", name  # no chain: closed
            # ... and next to terminating servers on one port: the name decides whether TLS is opened
            assert "CN = vault.example.com" in served_subject(https, "vault.example.com", address=address), name
            code, status, body = curl(f"https://vault.example.com:{https}/", https, certs, address=address)
            assert (code, status.split()[0], body) == (0, "200", "vault"), (name, code, status, body)
            assert "CN = a.example.com" in served_subject(https, "a.example.com", address=address), name


def test_a_websocket_goes_through_both_gateways_over_tls(tmp_path: Path) -> None:
    with gateways(tmp_path) as (_pilot, certs, ports):
        tls = ssl.create_default_context(cafile=certs.ca.files.cert)
        for name, address in PROXIES.items():
            url = f"wss://a.example.com:{ports['https']}/chat/room"
            with ws_connect(url, address, ports["https"], tls) as ws:
                ws.send("hello")
                assert ws.recv(timeout=5) == "chat:hello", name
                ws.send("path:")
                assert ws.recv(timeout=5) == "chat:/chat/room", name
                big = "y" * 200_000
                ws.send(big)
                assert ws.recv(timeout=10) == "chat:" + big, name


READY = """  - match: [{uri: {exact: /ready}}]
    directResponse: {status: 204}
  - route: [{destination: {host: web, subset: v1}}]
"""


def test_a_websocket_goes_through_both_sidecars(tmp_path: Path) -> None:
    chat = WsEcho("v1")
    with side_by_side(tmp_path, web_policy(("v1",), READY), (), "ws-sidecar", servers={"v1": chat}) as (ports, _):
        for name, port in ports.items():
            with ws_connect(f"ws://web:{port}/ws", "127.0.0.1", port) as ws:
                ws.send("hello")
                assert ws.recv(timeout=5) == "v1:hello", name
                time.sleep(0.2)
                ws.send("again")
                assert ws.recv(timeout=5) == "v1:again", name


def test_cors_at_the_edge_answers_preflights_alike_on_both_gateways(tmp_path: Path) -> None:
    with gateways(tmp_path) as (_pilot, certs, ports):
        https = ports["https"]
        preflight = (
            "-X",
            "OPTIONS",
            "-D",
            "-",
            "-H",
            "Origin: https://shop.example",
            "-H",
            "Access-Control-Request-Method: PUT",
        )
        seen = {}
        for name, address in PROXIES.items():
            code, status, head = curl(
                f"https://a.example.com:{https}/x", https, certs, address=address, extra=preflight
            )
            got = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in head.splitlines())
                if k.lower().startswith("access-control-")
            }
            assert code == 0 and status.split()[0] == "200", (name, status, head)
            assert got["access-control-allow-origin"] == "https://shop.example", (name, got)
            assert got["access-control-max-age"] == "3600", (name, got)
            seen[name] = got
            code, status, head = curl(
                f"https://a.example.com:{https}/x",
                https,
                certs,
                address=address,
                extra=("-D", "-", "-H", "Origin: https://other.example"),
            )
            assert code == 0 and "access-control-allow-origin" not in head.lower(), (name, head)
        assert seen["envoy"] == seen["sofamesh"]
