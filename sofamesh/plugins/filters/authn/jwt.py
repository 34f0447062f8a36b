"""``authn.jwt``: validate JSON Web Tokens in the sidecar, like Istio's RequestAuthentication.

A token is read from a header (``authorization: Bearer ...`` by default) or, for Bolt and Dubbo,
from a header-map key / attachment of the same name (``RequestHead.key``). RS256 and ES256 (and the
other RSA / EC / PSS algorithms PyJWT knows) are checked against the provider's JWKS, plus issuer,
audience and expiry with clock skew. A valid token sets ``StreamContext.request_principal``
(``<iss>/<sub>``) and its claims under ``attrs["jwt.claims"]``; an invalid one is answered with the
protocol's "unauthenticated" reply. A request without a token passes unless ``require`` is set
(as in Istio, requiring one is usually an ``authz.rbac`` ``requestPrincipals`` rule).

Keys come from inline JSON, a file (re-read when it changes) or an HTTP URI (fetched in a thread,
cached, refreshed every ``refresh_s`` and when a token names an unknown ``kid``; streams that need
keys being fetched STOP and are resumed when they arrive). Verified tokens are cached until expiry.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt
from pydantic import Field, model_validator

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.errors import ConfigError
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, LocalReply, Verdict
from sofamesh.plugins.filters.identity import CLAIMS_ATTR
from sofamesh.plugins.filters.settings import Settings, parse

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.stream import Stream

log = logging.getLogger("sofamesh.jwt")

_MIN_REFETCH_S = 2.0  # an unknown kid triggers at most one fetch per this many seconds
_CACHE_MAX = 10_000


class TokenSource(Settings):
    name: str = "authorization"  # header, Bolt header-map key or Dubbo attachment
    prefix: str = ""


class Provider(Settings):
    name: str = ""
    issuer: str
    audiences: list[str] = Field(default_factory=list)
    jwks: str | dict[str, Any] | None = None
    jwks_file: str | None = None
    jwks_uri: str | None = None
    refresh_s: float = Field(default=300.0, gt=0)
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    from_headers: list[TokenSource] = Field(
        default_factory=lambda: [TokenSource(name="authorization", prefix="Bearer ")])
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    clock_skew_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> Provider:
        given = [k for k in ("jwks", "jwks_file", "jwks_uri") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of jwks, jwks_file, jwks_uri (got {given or 'none'})")
        return self


class JwtSettings(Settings):
    providers: list[Provider]
    require: bool = False


class KeySet:
    """One provider's keys by kid, with where they come from."""

    def __init__(self, p: Provider, path: str) -> None:
        self.p = p
        self.path = path
        self.keys: dict[str | None, Any] = {}
        self.loaded = False
        self.fetching = False
        self.fetched_at = -1e9
        self.file_stamp: tuple[int, int] | None = None
        self.file_checked = 0.0
        self.error = ""
        self.waiters: list[Stream] = []
        if p.jwks is not None:
            self._set(p.jwks if isinstance(p.jwks, str) else json.dumps(p.jwks), strict=True)
        elif p.jwks_file:
            self._read_file(strict=True)

    def _set(self, text: str, strict: bool = False) -> None:
        try:
            data = json.loads(text)
            keys: dict[str | None, Any] = {}
            for k in data.get("keys", []):
                pk = jwt.PyJWK(k)
                keys[k.get("kid")] = pk
            if not keys:
                raise ValueError("no keys")
        except (ValueError, jwt.exceptions.PyJWKError, AttributeError, TypeError) as exc:
            if strict:
                raise ConfigError(self.path, f"bad JWKS: {exc}") from None
            self.error = f"bad JWKS: {exc}"
            log.warning("jwt provider %s: %s", self.p.issuer, self.error)
            return
        self.keys = keys
        self.loaded = True
        self.error = ""

    def _read_file(self, strict: bool = False) -> None:
        assert self.p.jwks_file
        try:
            st = os.stat(self.p.jwks_file)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self.file_stamp:
                return
            with open(self.p.jwks_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            if strict:
                raise ConfigError(f"{self.path}.jwks_file", f"cannot read {self.p.jwks_file}: {exc}") from None
            return
        self.file_stamp = stamp
        self._set(text, strict)

    def key_for(self, kid: str | None, now: float) -> Any:
        if self.p.jwks_file and now - self.file_checked >= 1.0:
            self.file_checked = now
            self._read_file()
        k = self.keys.get(kid)
        if k is None and kid is None and len(self.keys) == 1:
            k = next(iter(self.keys.values()))
        return k

    def fetch(self, loop: asyncio.AbstractEventLoop, done: Any) -> None:
        """Fetch the JWKS in a thread; ``done(self)`` runs on ``loop`` afterwards."""
        self.fetching = True
        self.fetched_at = time.monotonic()
        uri, timeout = self.p.jwks_uri, self.p.fetch_timeout_s
        assert uri

        def run() -> None:
            text, err = None, ""
            try:
                with urllib.request.urlopen(uri, timeout=timeout) as r:
                    text = r.read().decode()
            except Exception as exc:  # any failure is reported to the waiting streams, not raised
                err = f"cannot fetch JWKS from {uri}: {exc}"
            try:
                loop.call_soon_threadsafe(self._fetched, text, err, done)
            except RuntimeError:
                pass  # the loop is gone (shutdown)

        threading.Thread(target=run, name="sofamesh-jwks", daemon=True).start()

    def _fetched(self, text: str | None, err: str, done: Any) -> None:
        self.fetching = False
        if text is not None:
            self._set(text)
        else:
            self.error = err
            log.warning("jwt provider %s: %s", self.p.issuer, err)
        done(self)


class _Unverifiable(Exception):
    """The token's key is not known yet, but may be after a JWKS fetch."""


class JwtFilter(Filter):
    name = "authn.jwt"

    def __init__(self, settings: JwtSettings, path: str) -> None:
        self.require = settings.require
        self.keysets = [KeySet(p, f"{path}.config.providers[{i}]") for i, p in enumerate(settings.providers)]
        self.by_issuer = {ks.p.issuer: ks for ks in self.keysets}
        sources: dict[tuple[str, str], None] = {}
        for p in settings.providers:
            for s in p.from_headers:
                sources[(s.name.lower(), s.prefix)] = None
        self.sources = tuple(sources)
        self.cache: dict[str, tuple[float, str, dict[str, Any]]] = {}
        self.valid = 0
        self.invalid = 0
        self.missing = 0

    def _token(self, stream: Stream) -> str | None:
        head = stream.head
        for name, prefix in self.sources:
            v = head.key(name)
            if v:
                if prefix:
                    if v[: len(prefix)].lower() != prefix.lower():
                        continue
                    v = v[len(prefix):]
                return v.strip()
        return None

    def on_request_head(self, stream: Stream) -> FilterResult:
        token = self._token(stream)
        if token is None:
            if self.require:
                self.missing += 1
                return LocalReply(ReplyStatus.UNAUTHENTICATED, "Jwt is missing")
            return Verdict.CONTINUE
        hit = self.cache.get(token)
        now_wall = time.time()
        if hit is not None and hit[0] > now_wall:
            self._accept(stream, hit[1], hit[2])
            return Verdict.CONTINUE
        try:
            principal, claims, exp = self._verify(token, stream.conn.loop)
        except _Unverifiable as wait:
            ks = self.by_issuer[str(wait)]
            ks.waiters.append(stream)
            if not ks.fetching:
                ks.fetch(stream.conn.loop, self._keys_arrived)
            return Verdict.STOP
        except jwt.PyJWTError as exc:
            self.invalid += 1
            return LocalReply(ReplyStatus.UNAUTHENTICATED, f"Jwt verification fails: {exc}")
        self._remember(token, principal, claims, exp)
        self._accept(stream, principal, claims)
        return Verdict.CONTINUE

    def _verify(self, token: str, loop: asyncio.AbstractEventLoop) -> tuple[str, dict[str, Any], float]:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
        iss = unverified.get("iss")
        ks = self.by_issuer.get(iss) if isinstance(iss, str) else None
        if ks is None:
            raise jwt.InvalidIssuerError(f"issuer {iss!r} is not configured")
        now = time.monotonic()
        kid = header.get("kid")
        key = ks.key_for(kid, now)
        if ks.p.jwks_uri:
            age = now - ks.fetched_at
            if key is None:
                if ks.fetching or age >= _MIN_REFETCH_S:
                    raise _Unverifiable(ks.p.issuer)
            elif age >= ks.p.refresh_s and not ks.fetching:
                ks.fetch(loop, self._keys_arrived)  # refresh in the background; this token uses the cached key
        if key is None:
            raise jwt.InvalidKeyError(f"no key {kid!r} in the JWKS of {ks.p.issuer}" +
                                      (f" ({ks.error})" if ks.error else ""))
        p = ks.p
        claims = jwt.decode(token, key, algorithms=p.algorithms, audience=p.audiences or None, issuer=p.issuer,
                            leeway=p.clock_skew_s, options={"verify_aud": bool(p.audiences),
                                                            "require": ["exp"] if "exp" in unverified else []})
        exp = float(claims.get("exp", time.time() + 300))
        return f"{claims.get('iss', '')}/{claims.get('sub', '')}", claims, exp + p.clock_skew_s

    def _remember(self, token: str, principal: str, claims: dict[str, Any], exp: float) -> None:
        if len(self.cache) >= _CACHE_MAX:
            self.cache.clear()
        self.cache[token] = (exp, principal, claims)

    def _accept(self, stream: Stream, principal: str, claims: dict[str, Any]) -> None:
        self.valid += 1
        stream.context.request_principal = principal
        stream.context.attrs[CLAIMS_ATTR] = claims

    def _keys_arrived(self, ks: KeySet) -> None:
        waiters, ks.waiters = ks.waiters, []
        for stream in waiters:
            if stream.done:
                continue
            token = self._token(stream)
            assert token is not None
            try:
                principal, claims, exp = self._verify(token, stream.conn.loop)
            except _Unverifiable:
                principal, claims, exp = "", {}, 0.0
                self.invalid += 1
                stream.reply(ReplyStatus.UNAUTHENTICATED, f"Jwt verification fails: JWKS unavailable ({ks.error})")
                continue
            except jwt.PyJWTError as exc:
                self.invalid += 1
                stream.reply(ReplyStatus.UNAUTHENTICATED, f"Jwt verification fails: {exc}")
                continue
            self._remember(token, principal, claims, exp)
            self._accept(stream, principal, claims)
            stream.resume()

    def stats(self) -> dict[str, int]:
        return {"jwt_valid": self.valid, "jwt_invalid": self.invalid, "jwt_missing": self.missing}


class JwtFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return JwtFilter(parse(JwtSettings, config, path), path)


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("authn.jwt", JwtFilterFactory())


__all__ = ["JwtFilter", "JwtFilterFactory", "JwtSettings"]
