"""Workload certificates from Pilot's CA: two sofamesh sidecars (the agent inside) and a real Envoy
fed by ``sofamesh agent`` over SDS carry HTTP over mTLS; openssl sees the SPIFFE SAN and a chain to
Pilot's root; short-lived certificates rotate under load with no failed request."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.core.net.secrets import CertificateSecret, SecretStore
from sofamesh.core.security.agent import AgentSettings, WorkloadAgent
from sofamesh.testing import ProxyProcess, free_port

from .conftest import REPO, PilotProcess, stop_process, wait_until
from .test_envoy import HttpBackend, _envoy_binary

_H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TD = "cluster.local/ns/default/sa"


def _token(pilot: PilotProcess, sa: str, path: Path) -> Path:
    out = subprocess.run([sys.executable, "-m", "sofamesh", "pilot", "token", "create", "--namespace", "default",
                          "--service-account", sa, "--ttl", "1h", "--pilot", pilot.api_url,
                          "--admin-token-file", str(pilot.admin_token_file)],
                         capture_output=True, text=True, timeout=30, cwd=REPO)
    assert out.returncode == 0, out.stderr
    path.write_text(out.stdout)
    return path


def _client_cert(pilot: PilotProcess, tmp: Path, sa: str) -> tuple[str, str]:
    """A certificate for ``sa`` fetched in this process (as an agent would), written for ssl/openssl."""
    store = SecretStore()
    agent = WorkloadAgent(AgentSettings(f"127.0.0.1:{pilot.xds_port}",
                                        token_file=str(_token(pilot, sa, tmp / f"{sa}.token")), validity_s=600),
                          store)

    async def fetch() -> None:
        await agent.renew()
        await agent.stop()

    asyncio.run(asyncio.wait_for(fetch(), 20))
    cs = store.get("default")
    assert isinstance(cs, CertificateSecret)
    (tmp / f"{sa}.pem").write_bytes(cs.chain_pem)
    (tmp / f"{sa}-key.pem").write_bytes(cs.key_pem)
    return str(tmp / f"{sa}.pem"), str(tmp / f"{sa}-key.pem")


def _provider(pilot: PilotProcess, token: Path, backend: HttpBackend, port: int, validity_s: int) -> ProxyProcess:
    callers = [f"{_TD}/consumer", f"{_TD}/envoy", f"{_TD}/tester"]
    return ProxyProcess({
        "agent": {"ca_address": f"127.0.0.1:{pilot.xds_port}", "token_file": str(token), "validity_s": validity_s},
        "listeners": [{"name": "inbound", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                       "tls": {"secret": "default", "ca_secret": "ROOTCA", "require_client_cert": True},
                       "filters": [{"type": "authn.mtls", "config": {"mode": "STRICT"}},
                                   {"type": "authz.rbac", "config": {"policies": [{
                                       "name": "callers", "action": "ALLOW",
                                       "rules": [{"from": [{"source": {"principals": callers}}]}]}]}}],
                       "routes": [{"name": "app", "cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [f"127.0.0.1:{backend.port}"]}],
    }, timeout=30).start()


def _consumer(pilot: PilotProcess, token: Path, inbound: int, port: int, validity_s: int) -> ProxyProcess:
    # The identity comes from the flags here (from the token in the provider).
    return ProxyProcess({
        "agent": {"ca_address": f"127.0.0.1:{pilot.xds_port}", "token_file": str(token), "validity_s": validity_s},
        "listeners": [{"name": "outbound", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                       "routes": [{"name": "provider", "cluster": "provider"}]}],
        "clusters": [{"name": "provider", "endpoints": [f"127.0.0.1:{inbound}"],
                      "tls": {"secret": "default", "ca_secret": "ROOTCA"}}],
    }, args=("--namespace", "default", "--service-account", "consumer"), timeout=30).start()


class AgentAndEnvoy:
    """``sofamesh agent`` on a Unix socket, and an Envoy whose only upstream is the provider over mTLS
    with its certificate and trust bundle from that agent over SDS."""

    def __init__(self, tmp: Path, pilot: PilotProcess, inbound: int, validity_s: int) -> None:
        self.sock = tmp / "sds.sock"
        self.agent_log = tmp / "agent.log"
        token = _token(pilot, "envoy", tmp / "envoy.token")
        with self.agent_log.open("wb") as out:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "sofamesh", "agent", "--pilot", f"127.0.0.1:{pilot.xds_port}",
                 "--token-file", str(token), "--sds-socket", str(self.sock), "--validity-s", str(validity_s)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        wait_until(lambda: self.sock.exists() or self.agent.poll() is not None, 20, what="the agent's SDS socket")
        assert self.agent.poll() is None, self.agent_log.read_text()
        self.admin_port, self.port = free_port(), free_port()
        sds = {"api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                     "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
               "resource_api_version": "V3"}

        def static(name: str, address: dict[str, Any]) -> dict[str, Any]:
            return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}}

        sds_cluster = static("sds-grpc", {"pipe": {"path": str(self.sock)}})
        sds_cluster["typed_extension_protocol_options"] = {_H2: {
            "@type": f"type.googleapis.com/{_H2}", "explicit_http_config": {"http2_protocol_options": {}}}}
        provider = static("provider", {"socket_address": {"address": "127.0.0.1", "port_value": inbound}})
        provider["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds}],
                                   "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": sds}}}}
        hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                        "HttpConnectionManager",
               "stat_prefix": "out", "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
               "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                   {"match": {"prefix": "/"}, "route": {"cluster": "provider"}}]}]}}
        bootstrap = {
            "node": {"id": "envoy-sds", "cluster": "edge"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "static_resources": {
                "listeners": [{"name": "out", "address": {"socket_address": {"address": "127.0.0.1",
                                                                              "port_value": self.port}},
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": [sds_cluster, provider]}}
        path = tmp / "envoy.json"
        path.write_text(json.dumps(bootstrap))
        self.log = tmp / "envoy.log"
        with self.log.open("wb") as out:
            self.envoy = subprocess.Popen([str(_envoy_binary()), "-c", str(path), "--disable-hot-restart",
                                           "--concurrency", "1", "-l", "warning"], stdout=out, stderr=subprocess.STDOUT)

    def certs(self) -> list[dict[str, Any]]:
        """The certificate Envoy presents (SANs, serial), from its admin /certs."""
        try:
            data = httpx.get(f"http://127.0.0.1:{self.admin_port}/certs", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return []
        return [c for entry in data.get("certificates", []) for c in entry.get("cert_chain", [])]

    def stop(self) -> None:
        stop_process(self.envoy)
        stop_process(self.agent)


@pytest.fixture
def mesh(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    validity_s: int = getattr(request, "param", 0)
    pilot = PilotProcess(tmp_path / "data", config={"ca": {"min_workload_ttl_s": 2}}).start()
    backend = HttpBackend("app")
    started: list[Any] = [pilot, backend]
    try:
        inbound, outbound = free_port(), free_port()
        provider = _provider(pilot, _token(pilot, "provider", tmp_path / "provider.token"), backend, inbound,
                             validity_s)
        started.append(provider)
        consumer = _consumer(pilot, _token(pilot, "consumer", tmp_path / "consumer.token"), inbound, outbound,
                             validity_s)
        started.append(consumer)
        edge = AgentAndEnvoy(tmp_path, pilot, inbound, validity_s)
        started.append(edge)
        yield {"pilot": pilot, "provider": provider, "consumer": consumer, "edge": edge, "inbound": inbound,
               "outbound": outbound, "root": str(pilot.data_dir / "security" / "root-cert.pem"), "tmp": tmp_path}
    finally:
        for s in reversed(started):
            s.stop()


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, headers={"Connection": "close"})
    except httpx.HTTPError:
        return None


def _ok(url: str) -> bool:
    r = _get(url)
    return r is not None and r.status_code == 200 and r.text == "app"


def _served(inbound: int, root: str, cert: tuple[str, str]) -> tuple[dict[str, Any], int]:
    """A fresh mTLS handshake with the provider: its certificate as Python's ssl verified it
    against Pilot's root, and the HTTP status it answers."""
    ctx = ssl.create_default_context(cafile=root)
    ctx.check_hostname = False
    ctx.load_cert_chain(*cert)
    with httpx.Client(verify=ctx, timeout=5) as c:
        r = c.get(f"https://127.0.0.1:{inbound}/")
        peer = r.extensions["network_stream"].get_extra_info("ssl_object").getpeercert()
    return peer, r.status_code


def test_sidecars_and_envoy_get_their_certificates_from_pilot_and_carry_http_over_mtls(mesh: dict[str, Any]) -> None:
    pilot, inbound, root, tmp = mesh["pilot"], mesh["inbound"], mesh["root"], mesh["tmp"]
    # sidecar -> sidecar: plaintext from the app to the consumer, mTLS between the sidecars
    assert wait_until(lambda: _ok(f"http://127.0.0.1:{mesh['outbound']}/"), 20, what="consumer -> provider")
    # Envoy (secrets over SDS from `sofamesh agent`) -> sidecar
    edge = mesh["edge"]
    assert wait_until(lambda: _ok(f"http://127.0.0.1:{edge.port}/"), 30,
                      what=f"envoy -> provider ({edge.log}, {edge.agent_log})")
    assert next(c["subject_alt_names"] for c in edge.certs()) == [{"uri": f"spiffe://{_TD}/envoy"}]
    # What each caller was, as the provider's authn.mtls saw them (rbac allowed only those two)
    filters = mesh["provider"].stats()["filters"]["inbound|authn.mtls"]
    assert filters["mtls_authenticated"] >= 2 and filters["mtls_plaintext"] == 0
    # Python ssl: the provider's chain verifies against Pilot's root; its SAN is the SPIFFE id
    tester = _client_cert(pilot, tmp, "tester")
    peer, status = _served(inbound, root, tester)
    assert peer["subjectAltName"] == (("URI", f"spiffe://{_TD}/provider"),) and status == 200
    # an identity the provider's policy does not name is authenticated, then denied
    _, denied = _served(inbound, root, _client_cert(pilot, tmp, "stranger"))
    assert denied == 403
    # no client certificate: the handshake is refused
    bare = ssl.create_default_context(cafile=root)
    bare.check_hostname = False
    with pytest.raises((httpx.HTTPError, ssl.SSLError)):
        httpx.get(f"https://127.0.0.1:{inbound}/", verify=bare, timeout=5)
    # openssl: the SPIFFE SAN, the chain to Pilot's root
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to show what a third-party TLS client sees"
    out = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{inbound}", "-CAfile", root, "-cert",
                          tester[0], "-key", tester[1], "-verify_return_error", "-showcerts"],
                         input=b"", capture_output=True, timeout=20)
    text = out.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in text, text
    leaf_pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    assert leaf_pem is not None
    x509_text = subprocess.run([openssl, "x509", "-noout", "-text"], input=leaf_pem.group(0).encode(),
                               capture_output=True, timeout=10).stdout.decode()
    assert f"URI:spiffe://{_TD}/provider" in x509_text
    # and on Pilot: who got what
    ca = pilot.get("/debug/ca")
    assert ca["signed"] >= 5 and ca["ca"]["mode"] == "self-signed root"


@pytest.mark.parametrize(("mesh", "seconds", "pace", "least"), [
    pytest.param(4, 14, 0.0, 3, id="4s-certificates-for-14s"),
    # the figure: two-minute certificates (renewed at about half their life, with jitter)
    # under continuous, paced load for five minutes
    pytest.param(120, 300, 0.02, 4, id="2min-certificates-for-5min", marks=pytest.mark.timeout(480)),
], indirect=["mesh"])
def test_short_lived_certificates_rotate_under_continuous_load_with_no_failed_request(
        mesh: dict[str, Any], seconds: float, pace: float, least: int) -> None:
    pilot, inbound, root, tmp = mesh["pilot"], mesh["inbound"], mesh["root"], mesh["tmp"]
    edge = mesh["edge"]
    targets = {"sidecar": f"http://127.0.0.1:{mesh['outbound']}/", "envoy": f"http://127.0.0.1:{edge.port}/"}
    for name, url in targets.items():
        wait_until(lambda u=url: _ok(u), 30, what=f"{name} path ready ({edge.log})")
    tester = _client_cert(pilot, tmp, "tester")
    results: dict[str, list[int]] = {"sidecar": [], "envoy": [], "direct": []}
    serials: dict[str, set[str]] = {"provider (seen by new handshakes)": set(), "consumer": set(), "envoy": set()}
    stop = threading.Event()

    def load(name: str, url: str) -> None:
        with httpx.Client(timeout=5) as keepalive:  # one long connection, and a new one per request
            while not stop.is_set():
                for client_get in (lambda: keepalive.get(url), lambda: httpx.get(url, timeout=5)):
                    try:
                        r = client_get()
                        results[name].append(r.status_code if r.text == "app" else -r.status_code)
                    except httpx.HTTPError:
                        results[name].append(0)
                    if pace:
                        time.sleep(pace)

    def direct() -> None:
        while not stop.is_set():
            try:
                peer, status = _served(inbound, root, tester)
                serials["provider (seen by new handshakes)"].add(str(peer["serialNumber"]))
                results["direct"].append(status)
            except (httpx.HTTPError, ssl.SSLError, OSError):
                results["direct"].append(0)
            time.sleep(0.05)

    threads = [threading.Thread(target=load, args=item) for item in targets.items()]
    threads.append(threading.Thread(target=direct))
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            consumer = json.loads(mesh["consumer"].get("/certs"))["default"]
            serials["consumer"].add(consumer[0]["serial"])
            serials["envoy"].update(str(c.get("serial_number")) for c in edge.certs())
            time.sleep(0.25)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    failed = {name: [s for s in codes if s != 200] for name, codes in results.items()}
    counts = {name: len(codes) for name, codes in results.items()}
    assert failed == {"sidecar": [], "envoy": [], "direct": []}, (counts, failed)
    assert min(counts.values()) >= 20, counts
    # 14 s of 4 s certificates renewed at ~2 s; 300 s of 120 s ones at ~60 s
    assert all(len(s) >= least for s in serials.values()), serials
