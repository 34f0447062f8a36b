"""authz.rbac by SPIFFE identity over mTLS with real Bolt, Dubbo and gRPC peers.

client (sofa-rpc-node / dubbo2.js / grpcio) -> sidecar "shop" or "cart" (plaintext in, mTLS out with its
workload certificate) -> provider's sidecar (mTLS in, authn.mtls STRICT + authz.rbac) -> provider.
One method of a service is allowed to "shop", another is not; "cart" gets nothing. The clients see
their protocol's normal error for the denied calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sofamesh.certs import load_or_mint_ca, mint_workload
from sofamesh.testing import ProxyProcess, free_port
from tests.conformance import dubbo_peers
from tests.conformance.bolt_peers import node_consumer, node_provider

TD = "spiffe://cluster.local/ns/default/sa"
ECHO = "com.example.EchoService"


@contextmanager
def mesh(tmp: Path, protocol: str, provider: str, rbac: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The provider's sidecar plus one client sidecar per workload; yields workload -> address."""
    ca = load_or_mint_ca(tmp)
    inbound = mint_workload(ca, f"{TD}/provider", tmp, "provider")
    in_port = free_port()
    inbound_cfg = {
        "listeners": [{"name": "in", "address": f"127.0.0.1:{in_port}", "protocols": [protocol],
                       "tls": {"cert": inbound.cert, "key": inbound.key, "ca": ca.files.cert,
                               "require_client_cert": True},
                       "filters": [{"type": "authn.mtls", "config": {"mode": "STRICT"}},
                                   {"type": "authz.rbac", "config": rbac},
                                   {"type": "telemetry", "config": {"workload": "provider"}}],
                       "routes": [{"cluster": "local", "timeout_ms": 5000}]}],
        "clusters": [{"name": "local", "protocol": protocol, "endpoints": [provider]}],
    }
    with ExitStack() as stack:
        proxies = {"provider": stack.enter_context(ProxyProcess(inbound_cfg))}
        addresses = {}
        for name in ("shop", "cart"):
            files = mint_workload(ca, f"{TD}/{name}", tmp, name)
            port = free_port()
            proxies[name] = stack.enter_context(ProxyProcess({
                "listeners": [{"name": "out", "address": f"127.0.0.1:{port}", "protocols": [protocol],
                               "routes": [{"cluster": "provider", "timeout_ms": 5000}]}],
                "clusters": [{"name": "provider", "protocol": protocol, "endpoints": [f"127.0.0.1:{in_port}"],
                              "tls": {"cert": files.cert, "key": files.key, "ca": ca.files.cert}}],
            }))
            addresses[name] = f"127.0.0.1:{port}"
        yield addresses
        rb = proxies["provider"].stats()["filters"]["in|authz.rbac"]
        addresses["_stats"] = f"{rb['rbac_allowed']}/{rb['rbac_denied']}"
        addresses["_metrics"] = proxies["provider"].get("/stats/prometheus").decode()


def _allow(service: str, method: str) -> dict[str, Any]:
    return {"policies": [{"name": "shop-echo", "action": "ALLOW", "rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/default/sa/shop"]}}],
        "to": [{"operation": {"services": [service], "methods": [method]}}]}]}]}


def test_bolt_method_allowed_for_one_identity_and_denied_for_another_method_and_identity(tmp_path: Path) -> None:
    calls: list[dict[str, object]] = [{"method": "echo", "args": ["hi"]}, {"method": "plus", "args": [2, 3]}]
    with node_provider(ECHO, "A") as provider, \
            mesh(tmp_path, "bolt", provider.address, _allow(f"{ECHO}:1.0", "echo")) as at:
        shop = node_consumer(at["shop"], ECHO, calls)
        cart = node_consumer(at["cart"], ECHO, calls)
    assert shop[0] == {"ok": True, "result": "A:hi"}
    # Bolt has no permission status: a denial is RESPONSE_STATUS_SERVER_EXCEPTION, which
    # sofa-rpc-node raises as its usual server-exception error
    assert shop[1]["ok"] is False and "Server exception" in str(shop[1]["message"])
    assert [r["ok"] for r in cart] == [False, False]
    assert at["_stats"] == "1/3"
    ok = [ln for ln in at["_metrics"].splitlines() if ln.startswith("istio_requests_total{")
          and 'response_code="200"' in ln]
    assert len(ok) == 1 and ok[0].endswith(" 1.0")
    assert f'source_principal="{TD}/shop"' in ok[0] and 'source_workload="shop"' in ok[0]
    assert 'request_operation="echo"' in ok[0] and 'request_protocol="bolt"' in ok[0]
    assert f'destination_service="{ECHO}:1.0"' in ok[0]


def test_dubbo_method_allowed_for_one_identity_and_denied_for_another_method_and_identity(tmp_path: Path) -> None:
    dubbo_peers.require_dubbo_peers()
    j = dubbo_peers.java
    calls = [dubbo_peers.call("echo", j("java.lang.String", "hi")),
             dubbo_peers.call("add", j("int", 2), j("int", 40))]
    with dubbo_peers.Provider("p1") as provider, \
            mesh(tmp_path, "dubbo", provider.address, _allow(dubbo_peers.SERVICE, "echo")) as at:
        shop = dubbo_peers.consume(at["shop"], [dict(c) for c in calls])
        cart = dubbo_peers.consume(at["cart"], [dict(c) for c in calls])
    assert (shop[0]["ok"], shop[0]["res"]) == (True, "hi")
    assert shop[1]["ok"] is False and "RBAC: access denied" in str(shop[1]["err"])
    assert [r["ok"] for r in cart] == [False, False]
    assert at["_stats"] == "1/3"


def test_dubbo_jwt_in_an_attachment_sets_the_request_principal_that_rbac_checks(tmp_path: Path) -> None:
    import json
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    dubbo_peers.require_dubbo_peers()
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    now = int(time.time())

    def token(sub: str, exp_in: int = 300) -> str:
        return jwt.encode({"iss": "https://idp", "sub": sub, "exp": now + exp_in}, key, algorithm="ES256",
                          headers={"kid": "k1"})

    port = free_port()
    j = dubbo_peers.java
    with dubbo_peers.Provider("p1") as provider, ProxyProcess({
        "listeners": [{"name": "in", "address": f"127.0.0.1:{port}", "protocols": ["dubbo"],
                       "filters": [
                           {"type": "authn.jwt", "config": {"providers": [{
                               "issuer": "https://idp", "jwks": {"keys": [jwk]},
                               "from_headers": [{"name": "authorization", "prefix": "Bearer "}]}]}},
                           {"type": "authz.rbac", "config": {"policies": [{"action": "ALLOW", "rules": [
                               {"from": [{"source": {"requestPrincipals": ["https://idp/alice"]}}]}]}]}}],
                       "routes": [{"cluster": "p", "timeout_ms": 5000}]}],
        "clusters": [{"name": "p", "protocol": "dubbo", "endpoints": [provider.address]}],
    }):
        echo = j("java.lang.String", "hi")
        alice, bob, expired, none = dubbo_peers.consume(f"127.0.0.1:{port}", [
            dubbo_peers.call("echo", echo, attachments={"authorization": f"Bearer {token('alice')}"}),
            dubbo_peers.call("add", j("int", 1), j("int", 2), attachments={"authorization": f"Bearer {token('bob')}"}),
            dubbo_peers.call("concat", j("java.util.List", ["a"]), j("java.lang.String", "-"),
                             attachments={"authorization": f"Bearer {token('alice', exp_in=-600)}"}),
            dubbo_peers.call("whoami"),
        ])
    assert (alice["ok"], alice["res"]) == (True, "hi")
    assert bob["ok"] is False and "RBAC: access denied" in str(bob["err"])
    assert expired["ok"] is False and "expired" in str(expired["err"]).lower()
    assert none["ok"] is False and "RBAC: access denied" in str(none["err"])


def test_grpc_method_allowed_for_one_identity_and_denied_for_another_method_and_identity(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.conformance.test_http2_peers import GRPC_CLIENT, GRPC_SERVER, start_peer, stop_peer

    server = start_peer([sys.executable, str(GRPC_SERVER)])
    try:
        rbac = _allow("sofamesh.test.Echo", "Unary")
        ca = load_or_mint_ca(tmp_path)
        inbound = mint_workload(ca, f"{TD}/provider", tmp_path, "provider")
        in_port = free_port()
        with ExitStack() as stack:
            provider_side = stack.enter_context(ProxyProcess({
                "listeners": [{"name": "in", "address": f"127.0.0.1:{in_port}", "protocols": ["http2"],
                               "tls": {"cert": inbound.cert, "key": inbound.key, "ca": ca.files.cert,
                                       "require_client_cert": True, "alpn": ["h2"]},
                               "filters": [{"type": "authn.mtls", "config": {"mode": "STRICT"}},
                                           {"type": "authz.rbac", "config": rbac}],
                               "routes": [{"cluster": "local", "timeout_ms": 5000}]}],
                "clusters": [{"name": "local", "protocol": "http2", "endpoints": [f"127.0.0.1:{server.port}"]}],
            }))
            outcomes = {}
            for name in ("shop", "cart"):
                files = mint_workload(ca, f"{TD}/{name}", tmp_path, name)
                port = free_port()
                stack.enter_context(ProxyProcess({
                    "listeners": [{"name": "out", "address": f"127.0.0.1:{port}", "protocols": ["http2"],
                                   "routes": [{"cluster": "provider", "timeout_ms": 5000}]}],
                    "clusters": [{"name": "provider", "protocol": "http2", "endpoints": [f"127.0.0.1:{in_port}"],
                                  "tls": {"cert": files.cert, "key": files.key, "ca": ca.files.cert,
                                          "alpn": ["h2"]}}],
                }))
                out = subprocess.run([sys.executable, str(GRPC_CLIENT), f"127.0.0.1:{port}", "unary", "server_stream"],
                                     capture_output=True, timeout=60, check=True)
                outcomes[name] = json.loads(out.stdout.decode().strip().splitlines()[-1])
            rb = provider_side.stats()["filters"]["in|authz.rbac"]
    finally:
        stop_peer(server)
    assert outcomes["shop"]["unary"]["code"] == "OK" and outcomes["shop"]["unary"]["replies"] == ["echo:hello"]
    assert outcomes["shop"]["server_stream"]["code"] == "PERMISSION_DENIED"
    assert "RBAC: access denied" in outcomes["shop"]["server_stream"]["details"]
    assert [outcomes["cart"][c]["code"] for c in ("unary", "server_stream")] == ["PERMISSION_DENIED"] * 2
    assert (rb["rbac_allowed"], rb["rbac_denied"]) == (1, 3)
