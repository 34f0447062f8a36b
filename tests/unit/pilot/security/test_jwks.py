"""Pilot's JWKS resolver against a real HTTP server on 127.0.0.1: first fetch, refresh, a failed
fetch keeping the last good keys, a document that is not a JWKS, and the fake keys before any fetch."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sofamesh.pilot.security.jwks import JwksError, JwksResolver, parse_jwks


def _jwks(kid: str) -> str:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    jwk["kid"] = kid
    return json.dumps({"keys": [jwk]})


class JwksServer:
    def __init__(self) -> None:
        self.body = _jwks("k1")
        self.status = 200
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                data = owner.body.encode()
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    s = JwksServer()
    yield s
    s.stop()


async def _until(cond: Any, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


def test_keys_are_fetched_refreshed_and_kept_when_a_fetch_fails(jwks_server: JwksServer) -> None:
    async def run() -> None:
        changes: list[int] = []
        r = JwksResolver(refresh_s=0.3, retry_s=0.2, timeout_s=2, on_change=lambda: changes.append(1))
        await r.start()
        try:
            fake = r.keys(jwks_server.url)  # unknown: a key nobody holds, and a fetch starts
            assert json.loads(fake)["keys"][0]["kid"] == "sofamesh-unfetched"
            await _until(lambda: r.keys(jwks_server.url) == jwks_server.body, "first fetch")
            assert changes == [1] and r.describe()["uris"][jwks_server.url]["kids"] == ["k1"]
            jwks_server.body = _jwks("k2")  # rotated at the IdP: seen at the next refresh
            await _until(lambda: parse_jwks(r.keys(jwks_server.url)) == ["k2"], "refresh")
            assert len(changes) == 2
            good = r.keys(jwks_server.url)
            jwks_server.status = 503
            await _until(lambda: r.describe()["uris"][jwks_server.url]["failures"] >= 2, "failed fetches")
            status = r.describe()["uris"][jwks_server.url]
            assert r.keys(jwks_server.url) == good and len(changes) == 2
            assert "cannot fetch JWKS from " + jwks_server.url in status["error"] and "keeping" in status["error"]
            jwks_server.status, jwks_server.body = 200, '{"keys": []}'  # not a JWKS: the same
            await _until(lambda: "empty" in (r.describe()["uris"][jwks_server.url]["error"] or ""), "bad JWKS")
            assert r.keys(jwks_server.url) == good
            jwks_server.body = _jwks("k3")
            await _until(lambda: parse_jwks(r.keys(jwks_server.url)) == ["k3"], "recovered")
            assert r.describe()["uris"][jwks_server.url]["error"] is None
        finally:
            await r.stop()

    asyncio.run(run())


def test_a_uri_never_fetched_keeps_the_fake_keys_and_says_why() -> None:
    async def run() -> None:
        r = JwksResolver(refresh_s=60, retry_s=0.2, timeout_s=1)
        await r.start()
        try:
            url = "http://127.0.0.1:9/jwks"  # discard port: nothing listens
            fake = r.keys(url)
            await _until(lambda: r.describe()["uris"][url]["failures"] >= 1, "a failed fetch")
            assert r.keys(url) == fake
            assert "no keys yet: its tokens are refused" in r.describe()["uris"][url]["error"]
        finally:
            await r.stop()

    asyncio.run(run())


def test_parse_jwks_names_what_is_wrong() -> None:
    assert parse_jwks(_jwks("a")) == ["a"]
    for text, words in (
        ("nope", "not JSON"),
        ('{"keys": []}', "empty"),
        ('{"keys": [{"kty": "XX"}]}', r"keys\[0\]: Unsupported kty"),
    ):
        with pytest.raises(JwksError, match=words):
            parse_jwks(text)
