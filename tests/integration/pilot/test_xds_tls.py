"""Pilot's TLS xDS port (istiod's 15012): a serving certificate from Pilot's own CA for the
configured names, verified by openssl, the agent, a sofamesh sidecar and a real Envoy with Pilot's
roots; renewals authenticated by the workload's TLS client certificate; the serving certificate
rotates under open xDS streams, which keep receiving pushes."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sofamesh.core.config.model import PilotTlsConfig
from sofamesh.core.net.pilot_channel import pilot_channel
from sofamesh.core.net.secrets import CertificateSecret, SecretStore
from sofamesh.core.security import ca_api
from sofamesh.core.security.agent import AgentError, AgentSettings, WorkloadAgent, token_claims
from sofamesh.testing import ProxyProcess, free_port

from .conftest import REPO, GrpcBackend, PilotProcess, stop_process, wait_until
from .test_envoy import HttpBackend, _envoy_binary
from .test_proxyless_grpc import Client
from .test_workload_certs import _token

TLS_HOST = "pilot.mesh.test"
_H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class TlsPilot(PilotProcess):
    def __init__(self, data_dir: Path, serving_ttl_s: float, transport: str = "grpcio") -> None:
        self.tls_port = free_port()
        super().__init__(
            data_dir,
            config={
                "xds_tls": {"address": f"127.0.0.1:{self.tls_port}", "hostnames": [TLS_HOST], "ttl_s": serving_ttl_s},
                "ca": {"min_workload_ttl_s": 1},
            },
            transport=transport,
        )
        self.roots = data_dir.parent / "pilot-roots.pem"

    def start(self) -> TlsPilot:
        super().start()
        r = httpx.get(self.api_url + "/v1/ca/roots", timeout=5)
        assert r.status_code == 200 and "BEGIN CERTIFICATE" in r.text, r.text
        self.roots.write_text(r.text)
        return self

    def serving(self) -> dict[str, Any]:
        return dict(self.get("/debug/ca")["xds_tls"]["certificate"])

    def by_credential(self) -> dict[str, int]:
        return dict(self.get("/debug/ca")["by_credential"])


# the TLS port in front of each xDS transport: the certificate it serves and a proxyless client over
# it on both; the other tests (CSR renewal, rotation, identities) on the default transport
_ON_BOTH = {
    "test_tls_port_serves_a_certificate_from_pilots_ca_for_the_configured_names",
    "test_a_proxyless_grpc_client_takes_its_config_over_tls_with_pilots_roots",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tls_pilot" in metafunc.fixturenames and metafunc.function.__name__ in _ON_BOTH:
        metafunc.parametrize("tls_pilot", ["grpcio", "native"], indirect=True)


@pytest.fixture
def tls_pilot(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TlsPilot]:
    p = TlsPilot(tmp_path / "pilot", serving_ttl_s=6, transport=getattr(request, "param", "grpcio"))
    try:
        yield p.start()
    finally:
        p.stop()


def _s_client(port: int, *args: str) -> str:
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2", *args],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    return out.stdout.decode("latin-1") + out.stderr.decode("latin-1")


def _served_certificate(port: int) -> x509.Certificate:
    text = _s_client(port, "-servername", TLS_HOST)
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return x509.load_pem_x509_certificate(text[start:end].encode())


def test_tls_port_serves_a_certificate_from_pilots_ca_for_the_configured_names(
    tls_pilot: TlsPilot, tmp_path: Path
) -> None:
    port, roots = tls_pilot.tls_port, str(tls_pilot.roots)
    ok = _s_client(port, "-CAfile", roots, "-verify_return_error", "-verify_hostname", TLS_HOST)
    assert "Verify return code: 0 (ok)" in ok, ok
    assert "ALPN protocol: h2" in ok, ok
    wrong = _s_client(port, "-CAfile", roots, "-verify_return_error", "-verify_hostname", "other.example")
    assert "Verify return code: 62 (hostname mismatch)" in wrong, wrong
    cert = _served_certificate(port)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {TLS_HOST, "localhost"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/sofamesh-system/sa/pilot"
    ]
    assert f"{cert.serial_number:x}" == tls_pilot.serving()["serial"]
    # Another CA's roots do not verify it.
    other_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other root")])
    now = datetime.datetime.now(datetime.UTC)
    other = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(other_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(other_key, hashes.SHA256())
    )
    (tmp_path / "other.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "other-key.pem").write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    refused = _s_client(port, "-CAfile", str(tmp_path / "other.pem"), "-verify_return_error")
    assert "Verify return code: 0 (ok)" not in refused
    # The plaintext port still serves the CSR API and ADS (15010 beside 15012).
    assert "wrong version number" in _s_client(tls_pilot.xds_port)

    # A client certificate from another CA is refused: the CSR call never reaches Pilot.
    async def foreign_client() -> grpc.StatusCode:
        ch = pilot_channel(
            f"127.0.0.1:{port}",
            PilotTlsConfig(ca=roots),
            client_chain=(tmp_path / "other.pem").read_bytes(),
            client_key=(tmp_path / "other-key.pem").read_bytes(),
        )
        try:
            call = ch.unary_unary(
                ca_api.METHOD,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=ca_api.IstioCertificateResponse.FromString,
            )
            await call(ca_api.IstioCertificateRequest(csr="x"), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            await ch.close(None)
        return grpc.StatusCode.OK

    assert asyncio.run(foreign_client()) == grpc.StatusCode.UNAVAILABLE


def test_agent_over_tls_renews_with_its_certificate_after_its_token_is_revoked(
    tls_pilot: TlsPilot, tmp_path: Path
) -> None:
    token_file = _token(tls_pilot, "renewer", tmp_path / "renewer.token")
    jti = token_claims(token_file.read_text())["jti"]
    store = SecretStore()
    agent = WorkloadAgent(
        AgentSettings(
            f"127.0.0.1:{tls_pilot.tls_port}",
            token_file=str(token_file),
            validity_s=600,
            ca_tls=PilotTlsConfig(ca=str(tls_pilot.roots)),
        ),
        store,
    )

    async def run() -> tuple[list[str], list[int], str]:
        credentials, serials = [], []
        await agent.renew()
        credentials.append(agent.last_credential)
        serials.append(agent.serial)
        r = httpx.delete(f"{tls_pilot.api_url}/v1/tokens/{jti}", headers=tls_pilot.admin_headers(), timeout=5)
        assert r.status_code == 200, r.text
        for _ in range(2):
            await agent.renew()
            credentials.append(agent.last_credential)
            serials.append(agent.serial)
        # The same revoked token and no certificate on the plaintext port: refused.
        fresh = WorkloadAgent(
            AgentSettings(f"127.0.0.1:{tls_pilot.xds_port}", token_file=str(token_file)), SecretStore()
        )
        try:
            await fresh.renew()
            refused = "accepted"
        except AgentError as exc:
            refused = str(exc)
        await fresh.stop()
        # A certificate for another identity asked for with this one's certificate: PERMISSION_DENIED.
        cert = store.get("default")
        assert isinstance(cert, CertificateSecret)
        key = ec.generate_private_key(ec.SECP256R1())
        uri = "spiffe://cluster.local/ns/default/sa/admin"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        ch = pilot_channel(
            f"localhost:{tls_pilot.tls_port}",
            PilotTlsConfig(ca=str(tls_pilot.roots)),
            client_chain=cert.chain_pem,
            client_key=cert.key_pem,
        )
        call = ch.unary_unary(
            ca_api.METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=ca_api.IstioCertificateResponse.FromString,
        )
        try:
            await call(
                ca_api.IstioCertificateRequest(csr=csr.public_bytes(serialization.Encoding.PEM).decode()), timeout=10
            )
            denied = "accepted"
        except grpc.aio.AioRpcError as exc:
            denied = f"{exc.code().name}: {exc.details()}"
        await ch.close(None)
        await agent.stop()
        credentials.append(denied)
        return credentials, serials, refused

    credentials, serials, refused = asyncio.run(asyncio.wait_for(run(), 60))
    assert credentials[:3] == ["token", "peer certificate", "peer certificate"]
    assert len(set(serials)) == 3
    assert "UNAUTHENTICATED" in refused and "revoked" in refused, refused
    assert credentials[3].startswith("PERMISSION_DENIED"), credentials[3]
    assert "sa/admin" in credentials[3] and "sa/renewer" in credentials[3] and "peer certificate" in credentials[3]
    assert tls_pilot.by_credential() == {"token": 1, "peer certificate": 2}


class TlsEnvoy:
    """A real Envoy whose ADS cluster is Pilot's TLS port, verified with Pilot's roots (its bootstrap)."""

    def __init__(self, tmp: Path, pilot: TlsPilot) -> None:
        self.admin_port, self.outbound_port = free_port(), free_port()
        tls = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": TLS_HOST,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": {"filename": str(pilot.roots)},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": TLS_HOST}}],
                    },
                },
            },
        }
        bootstrap = {
            "node": {"id": "envoy-tls", "cluster": "edge", "metadata": {"sofamesh.outbound_port": self.outbound_port}},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "pilot"}}],
                },
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {
                "clusters": [
                    {
                        "name": "pilot",
                        "type": "STATIC",
                        "connect_timeout": "1s",
                        "transport_socket": tls,
                        "typed_extension_protocol_options": {
                            _H2: {
                                "@type": f"type.googleapis.com/{_H2}",
                                "explicit_http_config": {"http2_protocol_options": {}},
                            }
                        },
                        "load_assignment": {
                            "cluster_name": "pilot",
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "socket_address": {
                                                        "address": "127.0.0.1",
                                                        "port_value": pilot.tls_port,
                                                    }
                                                }
                                            }
                                        }
                                    ]
                                }
                            ],
                        },
                    }
                ]
            },
        }
        path = tmp / "envoy-tls.json"
        path.write_text(json.dumps(bootstrap))
        self.log = tmp / "envoy-tls.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(_envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        stop_process(self.proc)


def _body(port: int, host: str) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": host}, timeout=2)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def test_sidecar_and_envoy_follow_pilot_over_tls_while_its_serving_certificate_rotates(
    tls_pilot: TlsPilot, tmp_path: Path
) -> None:
    h1, h2 = HttpBackend("h1"), HttpBackend("h2")
    tls_pilot.register("web", "h1", address="127.0.0.1", port=h1.port, protocol="http")
    side_port = free_port()
    sidecar = ProxyProcess(
        {
            "agent": {"token_file": str(_token(tls_pilot, "side", tmp_path / "side.token")), "validity_s": 4},
            "xds": {
                "address": f"127.0.0.1:{tls_pilot.tls_port}",
                "node_id": "side",
                "tls": {"ca": str(tls_pilot.roots)},
                "metadata": {"sofamesh.outbound_port": side_port},
                "backoff_initial_ms": 100,
                "backoff_max_ms": 500,
            },
            "drain_timeout_ms": 1000,
        },
        timeout=30,
    )
    envoy: TlsEnvoy | None = None
    try:
        sidecar.start()
        envoy = TlsEnvoy(tmp_path, tls_pilot)
        for name, port in (("sidecar", side_port), ("envoy", envoy.outbound_port)):
            assert wait_until(lambda port=port: _body(port, "web"), 20, what=f"{name} serving web over TLS xDS") == "h1"

        def streams() -> dict[str, int]:
            return {n["node"]: n["stream"] for n in tls_pilot.get("/debug/syncz")["nodes"]}

        before = streams()
        assert {"side", "envoy-tls"} <= set(before), before
        first = tls_pilot.serving()
        # ttl 6 s: re-issued every ~3 s; wait for two rotations with the streams open.
        wait_until(
            lambda: tls_pilot.serving()["issued"] >= first["issued"] + 2,
            20,
            interval=0.2,
            what="two serving certificate rotations",
        )
        now_serving = tls_pilot.serving()
        assert now_serving["serial"] != first["serial"]
        assert f"{_served_certificate(tls_pilot.tls_port).serial_number:x}" == now_serving["serial"]
        # A push after the rotations reaches both over the streams they had.
        tls_pilot.register("web", "h2", address="127.0.0.1", port=h2.port, protocol="http")
        tls_pilot.deregister("web", "h1")
        for name, port in (("sidecar", side_port), ("envoy", envoy.outbound_port)):
            wait_until(lambda port=port: _body(port, "web") == "h2", 10, what=f"{name} following the push")
        after = streams()
        assert after["side"] == before["side"] and after["envoy-tls"] == before["envoy-tls"], (before, after)
        # The sidecar's agent, over the same TLS port, renewed by its certificate (4 s certificates).
        wait_until(
            lambda: tls_pilot.by_credential().get("peer certificate", 0) >= 1,
            10,
            what="a renewal authenticated by the sidecar's certificate",
        )
        assert "renewal failed" not in sidecar.log(), sidecar.log()
    finally:
        if envoy is not None:
            envoy.stop()
        sidecar.stop(check=False)
        h1.stop()
        h2.stop()


def test_a_bad_tls_port_address_stops_pilot_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "pilot.yaml"
    cfg.write_text("xds_tls:\n  address: nowhere\n")
    out = subprocess.run(
        [sys.executable, "-m", "sofamesh", "pilot", "-c", str(cfg), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert out.returncode == 2
    assert "xds_tls.address" in out.stderr and "'nowhere'" in out.stderr, out.stderr


def test_a_proxyless_grpc_client_takes_its_config_over_tls_with_pilots_roots(
    tls_pilot: TlsPilot, tmp_path: Path
) -> None:
    backend = GrpcBackend("b1")
    tls_pilot.register("echo", "b1", address="127.0.0.1", port=backend.port, protocol="grpc")
    creds = [{"type": "tls", "config": {"ca_certificate_file": str(tls_pilot.roots)}}]
    server = {"server_uri": f"localhost:{tls_pilot.tls_port}", "channel_creds": creds, "server_features": ["xds_v3"]}
    client = Client(tmp_path, tls_pilot, "xds:///echo", "proxyless-tls", server=server)
    try:
        assert client.answers(5, timeout=30) == ["b1"] * 5
        assert "proxyless-tls" in {n["node"] for n in tls_pilot.get("/debug/syncz")["nodes"]}
    finally:
        client.stop()
        backend.stop()


def _provider_sidecar(pilot: TlsPilot, tmp: Path, sa: str, claimed_sa: str, instance: str, tls: bool) -> ProxyProcess:
    """A sidecar whose token grants ``sa`` and whose node metadata claims ``claimed_sa``."""
    xds: dict[str, Any] = {
        "address": f"127.0.0.1:{pilot.tls_port if tls else pilot.xds_port}",
        "node_id": f"{sa}-{instance}",
        "metadata": {"sofamesh.instances": instance, "NAMESPACE": "default", "SERVICE_ACCOUNT": claimed_sa,
                     "sofamesh.outbound_port": free_port()},
        "backoff_initial_ms": 100,
        "backoff_max_ms": 500,
    }
    if tls:
        xds["tls"] = {"ca": str(pilot.roots)}
    return ProxyProcess({"agent": {"token_file": str(_token(pilot, sa, tmp / f"{sa}-{instance}.token")),
                                   "namespace": "default", "service_account": sa,
                                   **({"ca_address": f"127.0.0.1:{pilot.xds_port}"} if not tls else {})},
                         "xds": xds, "drain_timeout_ms": 1000}, timeout=30)


def test_a_learned_instance_runs_as_the_identity_of_its_sidecars_certificate_on_the_tls_port(
    tls_pilot: TlsPilot, tmp_path: Path
) -> None:
    """Over the TLS port the sidecar's xDS client presents its workload certificate and Pilot takes
    the instance's identity from it, not from what the node metadata claims; over the plaintext
    port the metadata is all Pilot has."""
    from .test_inbound_security import MeshSidecar

    apps = {name: HttpBackend(name) for name in ("web", "api")}
    started: list[Any] = list(apps.values())
    inbound = {name: free_port() for name in apps}
    try:
        for name, app in apps.items():
            tls_pilot.register(name, f"{name}-a", address="127.0.0.1", port=inbound[name], protocol="http",
                               labels={"sofamesh.io/app-port": str(app.port)})
        web = _provider_sidecar(tls_pilot, tmp_path, "web-sa", "claimed", "web-a", tls=True).start()
        started.append(web)
        api = _provider_sidecar(tls_pilot, tmp_path, "api-sa", "claimed", "api-a", tls=False).start()
        started.append(api)
        consumer = MeshSidecar(tls_pilot, tmp_path, "consumer").start()
        started.append(consumer)

        def sans(service: str) -> list[str] | None:
            for c in consumer.xds_config()["clusters"]:
                if c["name"].endswith(f"|{service}") and c.get("tls"):
                    return list(c["tls"]["match_sans"])
            return None

        wait_until(lambda: sans("web") and sans("api"), 30, what="auto mTLS to both learned instances")
        assert sans("web") == ["spiffe://cluster.local/ns/default/sa/web-sa"]  # from its certificate
        assert sans("api") == ["spiffe://cluster.local/ns/default/sa/claimed"]  # only the metadata to go by
        # the identity taken from the certificate is the one the provider serves: traffic flows
        assert wait_until(lambda: _body(int(consumer.egress("http").rpartition(":")[2]), "web"), 20,
                          what="consumer -> web over mTLS") == "web"
        # the one that trusted the metadata checks a SAN its provider does not hold: refused
        assert _body(int(consumer.egress("http").rpartition(":")[2]), "api") is None
    finally:
        failed = []
        for s in reversed(started):
            try:
                s.stop()
            except Exception as exc:
                failed.append(exc)
        if failed:
            raise failed[0]
