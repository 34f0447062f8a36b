"""authn.jwt through a running proxy: RS256 / ES256 tokens signed by test keys, expiry with skew,
wrong signatures and audiences, JWKS from a file and from an HTTP URI with rotation, claims used
by authz.rbac."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config

ISS = "https://idp.test"


class Key:
    def __init__(self, kid: str, alg: str) -> None:
        self.kid, self.alg = kid, alg
        if alg == "RS256":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update({"kid": kid, "alg": alg, "use": "sig"})

    def token(self, sub: str = "alice", aud: str = "shop", exp_in: float = 300, iss: str = ISS, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "exp": now + int(exp_in), **claims}
        return jwt.encode(body, self.private, algorithm=self.alg, headers={"kid": self.kid})


def jwks(*keys: Key) -> str:
    return json.dumps({"keys": [k.jwk for k in keys]})


class JwksServer:
    def __init__(self, body: str) -> None:
        self.body = body
        self.fetches = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.fetches += 1
                data = outer.body.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[Callable[[str], JwksServer]]:
    made: list[JwksServer] = []

    def make(body: str) -> JwksServer:
        s = JwksServer(body)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _get(port: int, token: str | None, path: str = "/data") -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=5)


def test_valid_rs256_and_es256_tokens_pass_and_bad_ones_get_401(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    rs, es, stranger = Key("r1", "RS256"), Key("e1", "ES256"), Key("r1", "RS256")
    f = tmp_path / "jwks.json"
    f.write_text(jwks(rs, es))
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "authn.jwt", "config": {
        "providers": [{"issuer": ISS, "audiences": ["shop"], "jwks_file": str(f), "clock_skew_s": 30}]}}])
    proxy = proxy_factory(cfg)
    assert _get(port, rs.token()).status_code == 200
    assert _get(port, es.token()).status_code == 200
    assert _get(port, rs.token(exp_in=-10)).status_code == 200  # inside the 30 s skew
    expired = _get(port, rs.token(exp_in=-120))
    assert expired.status_code == 401 and "expired" in expired.text.lower()
    assert _get(port, stranger.token()).status_code == 401  # same kid, another key: bad signature
    assert _get(port, rs.token(aud="billing")).status_code == 401
    assert _get(port, rs.token(iss="https://other")).status_code == 401
    assert _get(port, "not.a.jwt").status_code == 401
    assert _get(port, None).status_code == 200  # no token: left to authz.rbac, as in Istio
    assert proxy.stats()["filters"]["web|authn.jwt"]["jwt_invalid"] == 5


def test_claims_and_request_principal_drive_rbac(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    k = Key("k", "ES256")
    cfg, port = http_proxy_config([upstream.address], filters=[
        {"type": "authn.jwt", "config": {"providers": [{"issuer": ISS, "jwks": jwks(k)}]}},
        {"type": "authz.rbac", "config": {"policies": [{"action": "ALLOW", "rules": [{
            "from": [{"source": {"requestPrincipals": [f"{ISS}/*"]}}],
            "when": [{"key": "request.auth.claims[groups]", "values": ["admins"]}]}]}]}}])
    proxy_factory(cfg)
    assert _get(port, k.token(groups=["dev", "admins"])).status_code == 200
    assert _get(port, k.token(groups=["dev"])).status_code == 403
    assert _get(port, None).status_code == 403


def test_jwks_uri_is_fetched_once_cached_and_refetched_for_a_rotated_key(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess],
        jwks_server: Callable[[str], JwksServer]) -> None:
    old, new = Key("2026-01", "RS256"), Key("2026-02", "RS256")
    srv = jwks_server(jwks(old))
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "authn.jwt", "config": {
        "providers": [{"issuer": ISS, "jwks_uri": srv.url, "refresh_s": 3600}], "require": True}}])
    proxy_factory(cfg)
    assert [_get(port, old.token(sub=f"u{i}")).status_code for i in range(5)] == [200] * 5
    assert srv.fetches == 1
    assert _get(port, None).status_code == 401
    srv.body = jwks(old, new)  # the identity provider rotates: the new key is published
    time.sleep(2.1)  # past the minimum re-fetch interval
    assert _get(port, new.token()).status_code == 200
    assert srv.fetches == 2
    assert _get(port, old.token(sub="again")).status_code == 200
