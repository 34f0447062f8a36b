"""Pilot's JWKS resolver: the keys of a RequestAuthentication ``jwksUri``, fetched by Pilot and sent
inline to proxies that cannot fetch them themselves (Envoy's ``local_jwks``), as istiod does.

A URI is fetched the first time a generator asks for it (in a thread: ``urllib``), then every
``refresh_s`` (istiod's ``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL``, 20 min); a failed fetch is retried
every ``retry_s`` and keeps the last good keys. Until a URI was fetched once, :meth:`JwksResolver.keys`
answers a JWKS with one public key nobody holds the private key of (istiod's "fake JWKS"): every
token of that issuer fails verification (401), none is let through. When the keys of a URI change,
``on_change`` runs (Pilot pushes). :meth:`JwksResolver.describe` is ``/debug/jwks``: per URI, when it
was fetched, the keys' ids, and the last error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from sofamesh.core.net.loop import cancel

log = logging.getLogger("sofamesh.pilot.jwks")

_MAX_BYTES = 1 << 20  # a JWKS is a few kB; more is not one


class JwksError(Exception):
    """A fetched document that is not a usable JWKS."""


def parse_jwks(text: str) -> list[str]:
    """The key ids of a JWKS document (``""`` for a key without one); :class:`JwksError` naming
    what is wrong when Envoy or PyJWT could not use it."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise JwksError(f"not JSON: {exc}") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys:
        raise JwksError('no "keys" list, or an empty one')
    kids = []
    for i, k in enumerate(keys):
        try:
            jwt.PyJWK(k)
        except (jwt.exceptions.PyJWTError, AttributeError, TypeError, ValueError) as exc:
            raise JwksError(f"keys[{i}]: {exc}") from None
        kids.append(str(k.get("kid", "")))
    return kids


def _fake_jwks() -> str:
    key = ec.generate_private_key(ec.SECP256R1())  # the private half is dropped at once
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "sofamesh-unfetched", "alg": "ES256", "use": "sig"})
    return json.dumps({"keys": [jwk]})


def _fetch(uri: str, timeout: float) -> str:
    with urllib.request.urlopen(uri, timeout=timeout) as r:
        body: bytes = r.read(_MAX_BYTES + 1)
    if len(body) > _MAX_BYTES:
        raise JwksError(f"larger than {_MAX_BYTES} bytes")
    return body.decode()


@dataclass(slots=True)
class _Entry:
    uri: str
    text: str = ""  # the last good JWKS
    kids: list[str] = field(default_factory=list)
    fetched_at: float = 0.0  # wall clock of the last good fetch
    attempted_at: float = 0.0
    due: float = 0.0  # monotonic: when to fetch next
    error: str = ""
    fetches: int = 0
    failures: int = 0


class JwksResolver:
    """The JWKS of every ``jwksUri`` a generator asked for, kept fresh in the background."""

    def __init__(
        self,
        refresh_s: float = 1200.0,
        retry_s: float = 5.0,
        timeout_s: float = 5.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.on_change = on_change
        self._entries: dict[str, _Entry] = {}
        self._fake = ""
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def keys(self, uri: str) -> str:
        """The last good JWKS of ``uri``; the fake one (no token verifies) until it was fetched."""
        e = self._entries.get(uri)
        if e is None:
            e = self._entries[uri] = _Entry(uri)
            if self._wake is not None:
                self._wake.set()
        if e.text:
            return e.text
        if not self._fake:
            self._fake = _fake_jwks()
        return self._fake

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self._entries:
            self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)
            self._task = None

    async def refresh(self, uri: str) -> bool:
        """Fetch ``uri`` now; whether its keys changed."""
        e = self._entries.setdefault(uri, _Entry(uri))
        e.attempted_at = time.time()
        e.fetches += 1
        try:
            text = await asyncio.to_thread(_fetch, uri, self.timeout_s)
            kids = parse_jwks(text)
        except Exception as exc:  # any failure keeps the last good keys and is shown, not raised
            e.failures += 1
            error = f"cannot fetch JWKS from {uri}: {exc}" + (
                " (keeping the keys fetched before)" if e.text else " (no keys yet: its tokens are refused)"
            )
            if error != e.error:
                log.warning("%s", error)
            e.error = error
            e.due = time.monotonic() + self.retry_s
            return False
        if e.error:
            log.info("JWKS from %s fetched again", uri)
        e.error = ""
        e.fetched_at = time.time()
        e.due = time.monotonic() + self.refresh_s
        changed = text != e.text
        e.text, e.kids = text, kids
        return changed

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            now = time.monotonic()
            changed = False
            for e in [e for e in self._entries.values() if e.due <= now]:
                changed |= await self.refresh(e.uri)
            if changed and self.on_change is not None:
                self.on_change()
            nxt = min((e.due for e in self._entries.values()), default=now + self.refresh_s)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, nxt - time.monotonic()))
            except TimeoutError:
                pass

    def describe(self) -> dict[str, Any]:
        return {
            "refresh_s": self.refresh_s,
            "retry_s": self.retry_s,
            "uris": {
                e.uri: {
                    "fetched": bool(e.text),
                    "fetched_at": e.fetched_at or None,
                    "kids": e.kids,
                    "attempted_at": e.attempted_at or None,
                    "fetches": e.fetches,
                    "failures": e.failures,
                    "error": e.error or None,
                }
                for e in sorted(self._entries.values(), key=lambda e: e.uri)
            },
        }


__all__ = ["JwksError", "JwksResolver", "parse_jwks"]
