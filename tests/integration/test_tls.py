"""TLS on listeners (client-cert verification, rotation without restart) and to upstreams, through a
running proxy with real clients (httpx, the standard library's ssl)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sofamesh.certs import Authority, CertFiles, load_or_mint_ca, mint_workload
from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config


def _client_ctx(ca: Authority, files: CertFiles | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca.files.cert)
    if files is not None:
        ctx.load_cert_chain(files.cert, files.key)
    return ctx


def _server_uri_san(port: int, ca: Authority, client: CertFiles) -> str:
    ctx = _client_ctx(ca, client)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        cert = s.getpeercert()
    return next(v for k, v in cert["subjectAltName"] if k == "URI")


def test_listener_requires_a_client_certificate_signed_by_the_ca(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ca = load_or_mint_ca(tmp_path)
    server = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/web", tmp_path, "web")
    client = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/shop", tmp_path, "shop")
    other_ca = load_or_mint_ca(tmp_path / "other")
    stranger = mint_workload(other_ca, "spiffe://evil/ns/x/sa/y", tmp_path / "other", "stranger")
    cfg, port = http_proxy_config([upstream.address], tls={"cert": server.cert, "key": server.key, "ca": ca.files.cert,
                                                             "require_client_cert": True})
    proxy_factory(cfg)
    with httpx.Client(verify=_client_ctx(ca, client), timeout=5) as c:
        r = c.get(f"https://localhost:{port}/hello")
    assert r.status_code == 200 and r.text == "up-a GET /hello\n"
    for files in (None, stranger):
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), \
                httpx.Client(verify=_client_ctx(ca, files), timeout=5) as c:
            c.get(f"https://localhost:{port}/hello")


def test_rotated_listener_certificate_is_served_without_restart(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ca = load_or_mint_ca(tmp_path)
    server = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/web-v1", tmp_path, "web")
    client = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/shop", tmp_path, "shop")
    cfg, port = http_proxy_config([upstream.address], tls={"cert": server.cert, "key": server.key, "ca": ca.files.cert})
    proxy = proxy_factory(cfg)
    assert _server_uri_san(port, ca, client) == "spiffe://cluster.local/ns/default/sa/web-v1"
    mint_workload(ca, "spiffe://cluster.local/ns/default/sa/web-v2", tmp_path, "web")
    seen = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = _server_uri_san(port, ca, client)
        if seen.endswith("web-v2"):
            break
        time.sleep(0.3)
    assert seen == "spiffe://cluster.local/ns/default/sa/web-v2"
    assert proxy.proc is not None and proxy.proc.poll() is None


def test_upstream_tls_origination_presents_the_cluster_client_certificate(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ca = load_or_mint_ca(tmp_path)
    inbound = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/web", tmp_path, "web")
    outbound = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/shop", tmp_path, "shop")
    in_cfg, in_port = http_proxy_config([upstream.address], tls={
        "cert": inbound.cert, "key": inbound.key, "ca": ca.files.cert, "require_client_cert": True})
    proxy_factory(in_cfg)
    out_cfg, out_port = http_proxy_config([f"127.0.0.1:{in_port}"])
    out_cfg["clusters"][0]["tls"] = {"cert": outbound.cert, "key": outbound.key, "ca": ca.files.cert}
    out_proxy = proxy_factory(out_cfg)
    with httpx.Client(timeout=5) as c:
        rs = [c.get(f"http://127.0.0.1:{out_port}/via/{i}") for i in range(3)]
    assert [r.text for r in rs] == [f"up-a GET /via/{i}\n" for i in range(3)]
    assert out_proxy.stats()["clusters"]["web"]["upstream_cx_total"] == 1


def test_upstream_tls_to_a_server_of_another_ca_fails_the_request(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ca = load_or_mint_ca(tmp_path)
    other = load_or_mint_ca(tmp_path / "other")
    inbound = mint_workload(other, "spiffe://other/ns/default/sa/web", tmp_path / "other", "web")
    outbound = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/shop", tmp_path, "shop")
    in_cfg, in_port = http_proxy_config([upstream.address], tls={"cert": inbound.cert, "key": inbound.key})
    proxy_factory(in_cfg)
    out_cfg, out_port = http_proxy_config([f"127.0.0.1:{in_port}"])
    out_cfg["clusters"][0]["tls"] = {"cert": outbound.cert, "key": outbound.key, "ca": ca.files.cert}
    out_proxy = proxy_factory(out_cfg)
    r = httpx.get(f"http://127.0.0.1:{out_port}/x", timeout=5)
    assert r.status_code == 503
    assert out_proxy.stats()["clusters"]["web"]["upstream_cx_connect_fail"] >= 1


def test_a_rotated_cluster_client_certificate_is_used_for_new_upstream_connections(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ca = load_or_mint_ca(tmp_path)
    inbound = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/web", tmp_path, "web")
    client = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/shop-v1", tmp_path, "shop")
    rbac = {"policies": [{"action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/shop-v2"]}}]}]}]}
    in_cfg, in_port = http_proxy_config([upstream.address], filters=[{"type": "authz.rbac", "config": rbac}], tls={
        "cert": inbound.cert, "key": inbound.key, "ca": ca.files.cert, "require_client_cert": True})
    proxy_factory(in_cfg)
    out_cfg, out_port = http_proxy_config([f"127.0.0.1:{in_port}"])
    out_cfg["clusters"][0].update(idle_timeout_ms=200,
                                  tls={"cert": client.cert, "key": client.key, "ca": ca.files.cert})
    proxy_factory(out_cfg)
    assert httpx.get(f"http://127.0.0.1:{out_port}/x", timeout=5).status_code == 403
    mint_workload(ca, "spiffe://cluster.local/ns/default/sa/shop-v2", tmp_path, "shop")  # same files, new identity
    codes = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)  # idle upstream connections close; the next one reads the new files
        codes.append(httpx.get(f"http://127.0.0.1:{out_port}/x", timeout=5).status_code)
        if codes[-1] == 200:
            break
    assert codes[-1] == 200, codes


def test_certs_command_mints_a_ca_once_and_workload_certificates_with_spiffe_uri_sans(tmp_path: Path) -> None:
    import subprocess
    import sys

    from cryptography import x509

    def run(*workloads: str) -> str:
        out = subprocess.run([sys.executable, "-m", "sofamesh", "certs", "--out", str(tmp_path),
                              *[a for w in workloads for a in ("--workload", w)]],
                             capture_output=True, text=True, timeout=60, check=True)
        return out.stdout

    run("shop")
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    printed = run("web=spiffe://prod.example/ns/web/sa/frontend")
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem  # the CA is reused, so both chain to one root
    assert "spiffe://prod.example/ns/web/sa/frontend" in printed
    ca = x509.load_pem_x509_certificate(ca_pem)
    for name, spiffe in (("shop", "spiffe://cluster.local/ns/default/sa/shop"),
                         ("web", "spiffe://prod.example/ns/web/sa/frontend")):
        cert = x509.load_pem_x509_certificate((tmp_path / f"{name}.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
        cert.verify_directly_issued_by(ca)
        assert (tmp_path / f"{name}-key.pem").stat().st_mode & 0o077 == 0
