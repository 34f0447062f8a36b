"""DestinationRule ``trafficPolicy.tls`` with real TLS servers, through a sofamesh sidecar and a real
Envoy: SIMPLE verifies the server (CA file, SNI, subjectAltNames), MUTUAL also presents a client
certificate (port-level settings), a wrong subjectAltName fails the request, DISABLE is plaintext;
``credentialName`` is refused when applied."""

from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sofamesh.testing import ProxyProcess, UpstreamServer, free_port
from tests.integration.policy.apply import apply

from .conftest import REPO, PilotProcess, wait_until
from .test_envoy import Envoy

HOST = "secure.example"


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path.with_suffix(".pem")), str(path.with_suffix(".key"))


def _certs(tmp: Path) -> dict[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": _write(tmp / "ca", ca, ca_key)[0]}
    for name, san in (("server", x509.DNSName(HOST)), ("client", x509.DNSName("consumer.example"))):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        out[name], out[f"{name}_key"] = _write(tmp / name, cert, key)
    return out


class TlsServer(UpstreamServer):
    """An HTTPS server (Python ssl): answers ``"tls GET /"``; ``seen`` records, per handshake that
    completed, the SNI it got and the client certificate's CN (``none`` without one). Each handshake
    runs in its connection's own thread with a deadline, so a client that connects and says nothing
    (or speaks plaintext) holds up no other connection."""

    def __init__(self, certs: dict[str, str]) -> None:
        super().__init__("tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs["server"], certs["server_key"])
        ctx.load_verify_locations(certs["ca"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.sni: dict[int, str] = {}
        self.seen: list[str] = []
        self.refused: list[str] = []

        def on_sni(sslsock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.sni[id(sslsock)] = name or "-"

        ctx.sni_callback = on_sni  # type: ignore[assignment]
        self.ctx = ctx
        self.port = self.server_address[1]
        self.__enter__()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as exc:
            self.refused.append(type(exc).__name__)
            return
        cert = tls.getpeercert() or {}
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "none")
        self.seen.append(f"sni={self.sni.pop(id(tls), '-')} client={cn}")
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def stop(self) -> None:
        self.__exit__()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    certs = _certs(tmp_path)
    server = TlsServer(certs)
    pilot = PilotProcess(tmp_path / "data").start()
    started: list[Any] = [server, pilot]
    try:
        pilot.register("secure", "s1", address="127.0.0.1", port=server.port, protocol="http")
        out_port = free_port()
        sidecar = ProxyProcess(
            {
                "xds": {
                    "address": f"127.0.0.1:{pilot.xds_port}",
                    "node_id": "plain-consumer",
                    "backoff_initial_ms": 100,
                    "backoff_max_ms": 500,
                    "metadata": {"sofamesh.outbound_port": out_port},
                },
                "drain_timeout_ms": 1000,
            },
            timeout=30,
        ).start()
        started.append(sidecar)
        envoy = Envoy(tmp_path, pilot, "GRPC")
        started.append(envoy)
        yield {
            "proxy": sidecar,
            "pilot": pilot,
            "certs": certs,
            "server": server,
            "sidecar": f"http://127.0.0.1:{out_port}/",
            "envoy": f"http://127.0.0.1:{envoy.outbound_port}/",
        }
    finally:
        for s in reversed(started):
            s.stop()


def _get(url: str) -> str:
    try:
        r = httpx.get(url, headers={"Host": "secure"}, timeout=5)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return r.text.strip() if r.status_code == 200 else str(r.status_code)


def _dr(tls: str, port_level: str = "") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: secure
  trafficPolicy:
    tls: {tls}
{port_level}"""


def _until(setup: dict[str, Any], proxy: str, predicate: Any, timeout: float, what: str) -> None:
    """``wait_until``, failing with what the proxy last answered, Pilot's NACKs and the sidecar's log."""
    try:
        wait_until(predicate, timeout, what=what)
    except AssertionError as exc:
        nacks = setup["pilot"].get("/debug/syncz")["recent_nacks"]
        raise AssertionError(
            f"{exc}; last: {_get(setup[proxy])}; server saw {setup['server'].seen[-3:]}, refused "
            f"{setup['server'].refused[-3:]}; NACKs: {nacks}; sidecar: {setup['proxy'].log()[-3000:]}"
        ) from None


def _both(setup: dict[str, Any], expected: str, what: str) -> None:
    """Both proxies reach the server, and the connection the server accepted last saw ``expected``."""
    for proxy in ("sidecar", "envoy"):
        _until(
            setup,
            proxy,
            lambda proxy=proxy: _get(setup[proxy]) == "tls GET /" and setup["server"].seen[-1] == expected,
            20,
            f"{what} through the {proxy}",
        )


def test_simple_mutual_and_disable_against_a_real_tls_server(setup: dict[str, Any]) -> None:
    pilot, certs = setup["pilot"], setup["certs"]
    port = 80  # the service's port (the instance's is the server's own): cluster outbound|80|secure
    # No rule: plaintext to a TLS server fails through both (once their listeners are up).
    for proxy in ("sidecar", "envoy"):
        _until(setup, proxy, lambda proxy=proxy: _get(setup[proxy]) in ("502", "503"), 60, f"the {proxy} up")
    apply(
        pilot.api_url,
        stdin=_dr(f"{{mode: SIMPLE, caCertificates: {certs['ca']}, sni: {HOST}, subjectAltNames: [{HOST}]}}"),
    )
    _both(setup, f"sni={HOST} client=none", "SIMPLE")
    # MUTUAL on the service's port (port-level settings replace the rule's tls).
    apply(
        pilot.api_url,
        stdin=_dr(
            "{mode: DISABLE}",
            f"""    portLevelSettings:
    - port: {{number: {port}}}
      tls: {{mode: MUTUAL, caCertificates: {certs["ca"]}, clientCertificate: {certs["client"]},
             privateKey: {certs["client_key"]}, sni: {HOST}}}
""",
        ),
    )
    _both(setup, f"sni={HOST} client=client", "MUTUAL")
    # The server's certificate does not name what the rule asks for: refused.
    apply(
        pilot.api_url, stdin=_dr(f"{{mode: SIMPLE, caCertificates: {certs['ca']}, subjectAltNames: [other.example]}}")
    )
    for proxy in ("sidecar", "envoy"):
        _until(
            setup,
            proxy,
            lambda proxy=proxy: _get(setup[proxy]) in ("502", "503"),
            20,
            f"a wrong subjectAltName refused by the {proxy}",
        )


def test_credential_name_is_refused_when_applied_naming_the_field(tmp_path: Path) -> None:
    pilot = PilotProcess(tmp_path / "data").start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sofamesh", "apply", "-f", "-", "--pilot", pilot.api_url],
            input=_dr("{mode: SIMPLE, credentialName: secure-cert}"),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert done.returncode != 0
        assert "tls.credentialName" in done.stdout + done.stderr and "not supported" in done.stdout + done.stderr
    finally:
        pilot.stop()
