"""authn.mtls and authz.rbac through a running proxy: SPIFFE identities from real client
certificates (httpx), sidecar-to-sidecar mTLS, DENY before ALLOW, conditions, dry-run, counters."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sofamesh.certs import Authority, CertFiles, load_or_mint_ca, mint_workload
from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config

TD = "spiffe://cluster.local/ns"


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca: Authority = load_or_mint_ca(root)
        self.root = root
        self.web = mint_workload(self.ca, f"{TD}/default/sa/web", root, "web")

    def workload(self, name: str, ns: str = "default") -> CertFiles:
        return mint_workload(self.ca, f"{TD}/{ns}/sa/{name}", self.root, f"{ns}-{name}")

    def client(self, files: CertFiles | None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.ca.files.cert)
        if files is not None:
            ctx.load_cert_chain(files.cert, files.key)
        return httpx.Client(verify=ctx, timeout=5)

    def listener_tls(self) -> dict[str, Any]:
        return {"cert": self.web.cert, "key": self.web.key, "ca": self.ca.files.cert}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def _filters_stats(proxy: ProxyProcess) -> dict[str, dict[str, int]]:
    return proxy.stats()["filters"]


def test_rbac_allows_one_principal_and_path_and_denies_the_rest_with_403(
        pki: Pki, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rbac = {"policies": [
        {"name": "no-admin", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]},
        {"name": "shop-reads", "action": "ALLOW", "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/default/sa/shop"]}}],
            "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}]}]},
    ]}
    cfg, port = http_proxy_config([upstream.address], tls=pki.listener_tls(),
                                  filters=[{"type": "authn.mtls", "config": {"mode": "STRICT"}},
                                           {"type": "authz.rbac", "config": rbac}])
    proxy = proxy_factory(cfg)
    url = f"https://localhost:{port}"
    with pki.client(pki.workload("shop")) as shop:
        ok = shop.get(f"{url}/api/items")
        post = shop.post(f"{url}/api/items", content=b"x")
        admin = shop.get(f"{url}/admin/users")
    with pki.client(pki.workload("cart")) as cart:
        other = cart.get(f"{url}/api/items")
    with pki.client(None) as anonymous:
        anon = anonymous.get(f"{url}/api/items")
    assert (ok.status_code, ok.text) == (200, "up-a GET /api/items\n")
    assert post.status_code == 403
    assert admin.status_code == 403 and "no-admin" in admin.text
    assert other.status_code == 403
    assert anon.status_code == 401
    assert upstream.requests == 1
    fs = _filters_stats(proxy)
    assert fs["web|authz.rbac"] == {"rbac_allowed": 1, "rbac_denied": 3, "rbac_shadow_denied": 0}
    assert fs["web|authn.mtls"]["mtls_rejected"] == 1
    prom = proxy.get("/stats/prometheus").decode()
    assert 'sofamesh_filter_rbac_denied{listener="web",filter="authz.rbac"} 3' in prom


def test_permissive_mtls_serves_plaintext_and_mtls_clients_on_one_listener_each_with_its_identity(
        pki: Pki, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rbac = {"policies": [
        {"name": "public", "action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/public"]}}]}]},
        {"name": "shop-only", "action": "ALLOW", "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/default/sa/shop"]}}],
            "to": [{"operation": {"paths": ["/private"]}}]}]},
    ]}
    cfg, port = http_proxy_config([upstream.address], tls={**pki.listener_tls(), "plaintext": True},
                                  filters=[{"type": "authn.mtls", "config": {"mode": "PERMISSIVE"}},
                                           {"type": "authz.rbac", "config": rbac}])
    proxy = proxy_factory(cfg)
    codes: dict[str, tuple[int, int]] = {}
    with httpx.Client(timeout=5) as plain:  # no TLS at all, same port
        codes["plaintext"] = (plain.get(f"http://127.0.0.1:{port}/public").status_code,
                              plain.get(f"http://127.0.0.1:{port}/private").status_code)
    for name, files in (("shop", pki.workload("shop")), ("cart", pki.workload("cart")), ("tls-no-cert", None)):
        with pki.client(files) as c:
            codes[name] = (c.get(f"https://localhost:{port}/public").status_code,
                           c.get(f"https://localhost:{port}/private").status_code)
    assert codes == {"plaintext": (200, 403), "shop": (200, 200), "cart": (200, 403), "tls-no-cert": (200, 403)}
    stranger = mint_workload(load_or_mint_ca(pki.root / "other"), f"{TD}/default/sa/shop", pki.root / "other", "x")
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), pki.client(stranger) as c:
        c.get(f"https://localhost:{port}/private")  # a certificate from another CA fails the handshake
    # identities: shop's and cart's certificates were seen; plaintext and TLS without a certificate were not
    assert _filters_stats(proxy)["web|authn.mtls"] == {
        "mtls_authenticated": 4, "mtls_plaintext": 4, "mtls_rejected": 0}
    assert upstream.requests == 5


def test_rbac_namespaces_and_header_conditions_combine_within_a_rule(
        pki: Pki, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rbac = {"policies": [{"action": "ALLOW", "rules": [{
        "from": [{"source": {"namespaces": ["prod"]}}],
        "when": [{"key": "request.headers[x-tenant]", "values": ["acme", "ten-*"]}]}]}]}
    cfg, port = http_proxy_config([upstream.address], tls=pki.listener_tls(),
                                  filters=[{"type": "authz.rbac", "config": rbac}])
    proxy_factory(cfg)
    url = f"https://localhost:{port}/x"
    with pki.client(pki.workload("a", ns="prod")) as prod, pki.client(pki.workload("a", ns="dev")) as dev:
        codes = [prod.get(url, headers={"x-tenant": "acme"}).status_code,
                 prod.get(url, headers={"x-tenant": "ten-42"}).status_code,
                 prod.get(url, headers={"x-tenant": "other"}).status_code,
                 prod.get(url).status_code,
                 dev.get(url, headers={"x-tenant": "acme"}).status_code]
    assert codes == [200, 200, 403, 403, 403]


def test_dry_run_counts_would_be_denials_and_lets_requests_through(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rbac = {"dry_run": True, "policies": [{"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/secret"]}}]}]}]}
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "authz.rbac", "config": rbac}])
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        codes = [c.get("/secret").status_code for _ in range(3)] + [c.get("/open").status_code]
    assert codes == [200, 200, 200, 200]
    st = _filters_stats(proxy)["web|authz.rbac"]
    assert st["rbac_shadow_denied"] == 3 and st["rbac_denied"] == 0
    assert "rbac dry-run: would deny" in proxy.log()


def test_sidecar_to_sidecar_mtls_carries_the_calling_workload_identity(
        pki: Pki, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rbac = {"policies": [{"action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/shop"]}}]}]}]}
    in_cfg, in_port = http_proxy_config([upstream.address], tls={**pki.listener_tls(), "require_client_cert": True},
                                        filters=[{"type": "authn.mtls", "config": {"mode": "STRICT"}},
                                                 {"type": "authz.rbac", "config": rbac}])
    proxy_factory(in_cfg)
    results = {}
    for name in ("shop", "cart"):
        files = pki.workload(name)
        out_cfg, out_port = http_proxy_config([f"127.0.0.1:{in_port}"])
        out_cfg["clusters"][0]["tls"] = {"cert": files.cert, "key": files.key, "ca": pki.ca.files.cert}
        proxy_factory(out_cfg)
        results[name] = httpx.get(f"http://127.0.0.1:{out_port}/orders", timeout=5).status_code
    assert results == {"shop": 200, "cart": 403}


def test_bad_rbac_config_names_the_yaml_path(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    cfg, _ = http_proxy_config(["127.0.0.1:1"], filters=[{"type": "authz.rbac", "config": {"policies": [
        {"action": "ALLOW", "rules": [{"when": [{"key": "request.bogus", "values": ["x"]}]}]}]}}])
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(p)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "listeners[0].filters[0].config.policies[0].rules[0].when[0].key: unknown condition key 'request.bogus'" in r.stderr


def test_a_reload_swaps_the_policy_without_a_restart_and_refuses_a_broken_one(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    import copy

    import yaml

    def deny(path: str) -> dict[str, Any]:
        return {"type": "authz.rbac", "config": {"policies": [
            {"action": "DENY", "rules": [{"to": [{"operation": {"paths": [path]}}]}]}]}}

    cfg, port = http_proxy_config([upstream.address], filters=[deny("/a")])
    proxy = proxy_factory(cfg)
    url = f"http://127.0.0.1:{port}"
    assert (httpx.get(f"{url}/a", timeout=5).status_code, httpx.get(f"{url}/b", timeout=5).status_code) == (403, 200)
    new = copy.deepcopy(proxy.config)
    new["listeners"][0]["filters"] = [deny("/b")]
    assert httpx.post(proxy.admin_url + "/reload", content=yaml.safe_dump(new), timeout=5).status_code == 200
    assert (httpx.get(f"{url}/a", timeout=5).status_code, httpx.get(f"{url}/b", timeout=5).status_code) == (200, 403)
    bad = copy.deepcopy(new)
    bad["listeners"][0]["filters"] = [{"type": "authz.rbac", "config": {"policies": [{"action": "MAYBE"}]}}]
    r = httpx.post(proxy.admin_url + "/reload", content=yaml.safe_dump(bad), timeout=5)
    assert r.status_code == 400 and "listeners[0].filters[0].config.policies[0].action" in r.text
    assert httpx.get(f"{url}/b", timeout=5).status_code == 403


def test_hosts_match_the_host_header_with_or_without_its_port(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rbac = {"policies": [{"action": "ALLOW", "rules": [{"to": [{"operation": {"hosts": ["shop.local"]}}]}]}]}
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "authz.rbac", "config": rbac}])
    proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        codes = [c.get("/", headers={"host": h}).status_code for h in ("shop.local", f"shop.local:{port}", "evil.local")]
    assert codes == [200, 200, 403]
