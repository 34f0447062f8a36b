"""Bearer tokens that bind a workload to one identity (``sofamesh pilot token create``).

A token is a JWT signed with Pilot's Ed25519 key (``EdDSA``), which is created on first start and
kept in Pilot's security storage, so tokens stay valid across restarts until they expire or are
revoked. Claims: ``iss`` ``sofamesh-pilot``, ``aud`` ``sofamesh-ca``, ``sub`` the SPIFFE id it
grants, ``iat``, ``exp``, ``jti`` (what revocation names). The revocation list is kept in the same
storage, each entry until its token would have expired anyway.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sofamesh.core.security.spiffe import SpiffeId
from sofamesh.pilot.security.storage import SecretStorage

ISSUER = "sofamesh-pilot"
AUDIENCE = "sofamesh-ca"
_KEY = "token-signing-key.pem"
_REVOKED = "revoked-tokens.json"
_LEEWAY_S = 30


class TokenError(Exception):
    """A token that does not authenticate anyone; the message says why (never echoes the token)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token grants."""

    identity: SpiffeId
    jti: str
    expires_at: float


class TokenAuthority:
    """Issues, verifies and revokes tokens for one trust domain."""

    def __init__(self, storage: SecretStorage, trust_domain: str) -> None:
        self.storage = storage
        self.trust_domain = trust_domain
        self._lock = threading.Lock()
        self._key = self._load_key()
        pub = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.kid = hashlib.sha256(pub).hexdigest()[:16]
        self._revoked: dict[str, float] = self._load_revoked()
        self.issued = 0
        self.refused = 0

    def _load_key(self) -> ed25519.Ed25519PrivateKey:
        pem = self.storage.read(_KEY)
        if pem is None:
            fresh = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            self.storage.create(_KEY, fresh, private=True)
            pem = self.storage.read(_KEY)
            assert pem is not None
        key = serialization.load_pem_private_key(pem, None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise TokenError(f"{_KEY} in {self.storage.describe()} is not an Ed25519 key")
        return key

    def _load_revoked(self) -> dict[str, float]:
        return _revoked_list(self.storage.read(_REVOKED))

    def issue(
        self, namespace: str, service_account: str, ttl_s: float, *, now: float | None = None
    ) -> tuple[str, Grant]:
        """A token granting ``spiffe://<trust-domain>/ns/<namespace>/sa/<service_account>``, valid for
        ``ttl_s`` from ``now`` (the clock by default)."""
        identity = SpiffeId(self.trust_domain, namespace, service_account)
        now = int(time.time() if now is None else now)
        grant = Grant(identity, secrets.token_hex(12), float(now + int(ttl_s)))
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": identity.uri,
            "iat": now,
            "exp": now + int(ttl_s),
            "jti": grant.jti,
        }
        token = jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.kid})
        self.issued += 1
        return token, grant

    def verify(self, token: str) -> Grant:
        """The grant of a valid token; :class:`TokenError` saying why otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            self.refused += 1
            raise TokenError("the token has expired") from None
        except jwt.InvalidSignatureError:
            self.refused += 1
            raise TokenError("the token's signature does not verify (not issued by this Pilot, or altered)") from None
        except jwt.PyJWTError as exc:
            self.refused += 1
            raise TokenError(f"not a valid token: {exc}") from None
        jti = str(claims["jti"])
        if jti in self._revoked:
            self.refused += 1
            raise TokenError(f"the token {jti} has been revoked")
        try:
            identity = SpiffeId.parse(str(claims["sub"]))
        except ValueError as exc:
            self.refused += 1
            raise TokenError(str(exc)) from None
        return Grant(identity, jti, float(claims["exp"]))

    def reload(self) -> None:
        """Read the revocation list again (another replica revoked a token in the shared storage)."""
        revoked = self._load_revoked()
        with self._lock:
            self._revoked = revoked

    def revoke(self, jti: str, expires_at: float | None = None) -> None:
        """Refuse the token ``jti`` from now on (kept listed until ``expires_at``; a year if unknown)."""
        with self._lock:
            now = time.time()
            until = expires_at if expires_at is not None else now + 365 * 86400

            def add(raw: bytes | None) -> bytes:  # on the list as stored: what other replicas revoked stays
                listed = {**self._revoked, **_revoked_list(raw)}
                listed = {k: v for k, v in listed.items() if v + _LEEWAY_S > now}
                listed[jti] = until
                return json.dumps(listed, sort_keys=True).encode()

            self._revoked = _revoked_list(self.storage.update(_REVOKED, add))

    def describe(self) -> dict[str, Any]:
        return {"kid": self.kid, "issued": self.issued, "refused": self.refused, "revoked": len(self._revoked)}


def _revoked_list(raw: bytes | None) -> dict[str, float]:
    if raw is None:
        return {}
    return {str(k): float(v) for k, v in json.loads(raw).items()}


__all__ = ["AUDIENCE", "ISSUER", "Grant", "TokenAuthority", "TokenError"]
