"""The workload agent: a private key made here (it never leaves the process, except over SDS to a
co-located Envoy), a certificate for it from Pilot's CA over Istio's CSR API, renewed at about half
its lifetime with jitter, and the trust bundle; both published to a :class:`SecretStore` under the
SDS names ``default`` and ``ROOTCA``.

It authenticates with a bearer token (``sofamesh pilot token create``) while the token is valid,
and afterwards with its current certificate (a signature over the new CSR made with the current
key). Over TLS to Pilot's TLS xDS port (``ca_tls``: Pilot's roots) it renews as istio-agent does:
its current certificate is the TLS client certificate, and Pilot authenticates the renewal by it.
It runs in the loop of the process that uses it (``sofamesh proxy`` or ``sofamesh agent``); nothing
here is on the request path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sofamesh.core.errors import ConfigError, MeshError
from sofamesh.core.net.loop import cancel
from sofamesh.core.net.pilot_channel import pilot_channel
from sofamesh.core.net.secrets import (
    DEFAULT_CERT,
    PROCESS_SECRETS,
    ROOT_CA,
    CertificateSecret,
    SecretStore,
    TrustSecret,
)
from sofamesh.core.security import ca_api
from sofamesh.core.security.spiffe import SpiffeId, uri_sans

if TYPE_CHECKING:
    from sofamesh.core.config.model import AgentConfig, PilotTlsConfig, XdsConfig

log = logging.getLogger("sofamesh.agent")

_CALL_TIMEOUT_S = 10.0
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 30.0
_TOKEN_MARGIN_S = 5.0  # a token this close to its expiry is not sent


class AgentError(MeshError):
    """The agent could not get a certificate (the message says what the CA answered)."""


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Where the CA is, how to prove who we are, and what to ask for.

    ``identity`` comes from flags or node metadata; without it, from the token's ``sub`` claim.
    ``validity_s`` 0 asks for the CA's default lifetime.
    """

    ca_address: str
    token: str | None = None
    token_file: str | None = None
    identity: SpiffeId | None = None
    validity_s: int = 0
    ca_tls: PilotTlsConfig | None = None  # None: plaintext to the CA


def settings_from_config(agent: AgentConfig, xds: XdsConfig | None) -> AgentSettings:
    """The proxy's ``agent`` section (and its ``xds`` section: the CA defaults to the xDS server,
    the identity to node metadata ``NAMESPACE`` / ``SERVICE_ACCOUNT``) -> settings."""
    address = agent.ca_address or (xds.address if xds is not None else None)
    if address is None:
        raise ConfigError("agent.ca_address", "required without an xds section (Pilot's xDS port, HOST:PORT)")
    meta = xds.metadata if xds is not None else {}
    ns = agent.namespace or meta.get("NAMESPACE")
    sa = agent.service_account or meta.get("SERVICE_ACCOUNT")
    identity = None
    if ns and sa:
        td = agent.trust_domain
        if td is None:
            token = agent.token
            if token is None and agent.token_file:
                try:
                    token = Path(agent.token_file).read_text()
                except OSError as exc:
                    raise ConfigError("agent.token_file", f"cannot read {agent.token_file}: {exc.strerror}") from None
            try:
                td = SpiffeId.parse(str(token_claims(token or "").get("sub", ""))).trust_domain
            except ValueError:
                td = "cluster.local"
        try:
            identity = SpiffeId(td, str(ns), str(sa))
        except ValueError as exc:
            raise ConfigError("agent", str(exc)) from None
    tls = agent.ca_tls or (xds.tls if xds is not None and agent.ca_address is None else None)
    return AgentSettings(address, agent.token, agent.token_file, identity, agent.validity_s, tls)


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT-shaped token, unverified (only Pilot can verify it; the agent reads the
    identity and expiry it was issued for). ``ValueError`` when it is not a JWT."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("not a token (expected three dot-separated parts)")
    pad = "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + pad))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a token: {exc}") from None
    if not isinstance(claims, dict):
        raise ValueError("not a token (claims are not an object)")
    return claims


class WorkloadAgent:
    """Keeps ``default`` (certificate chain + key) and ``ROOTCA`` current in ``secrets``."""

    def __init__(self, settings: AgentSettings, secrets: SecretStore | None = None) -> None:
        self.settings = settings
        self.secrets = secrets if secrets is not None else PROCESS_SECRETS
        self.identity = settings.identity or self._identity_from_token()
        self.rotations = 0
        self.failures = 0
        self.last_error = ""
        self.last_credential = ""
        self.serial = 0
        self.not_after: datetime.datetime | None = None
        self.next_rotation_at = 0.0
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._leaf: x509.Certificate | None = None
        self._channel: grpc.aio.Channel | None = None
        self._channel_serial = -1  # the client certificate the TLS channel presents (0: none)
        self._task: asyncio.Task[None] | None = None

    # -- credentials ---------------------------------------------------------------------------
    def _token(self) -> str | None:
        s = self.settings
        if s.token_file:
            try:
                return Path(s.token_file).read_text().strip() or None
            except OSError as exc:
                raise ConfigError("agent.token_file", f"cannot read {s.token_file}: {exc.strerror}") from None
        return s.token.strip() if s.token else None

    def _identity_from_token(self) -> SpiffeId:
        token = self._token()
        if token is None:
            raise ConfigError("agent", "give a token (--token / --token-file) or the identity to ask for")
        try:
            return SpiffeId.parse(str(token_claims(token).get("sub", "")))
        except ValueError as exc:
            raise ConfigError("agent.token", f"cannot read the identity the token grants: {exc}") from None

    def _usable_token(self) -> str | None:
        token = self._token()
        if token is None:
            return None
        try:
            exp = float(token_claims(token).get("exp", 0))
        except (ValueError, TypeError):
            return token  # let the CA say what is wrong with it
        return token if not exp or exp - _TOKEN_MARGIN_S > time.time() else None

    def _metadata(self, csr_pem: bytes) -> tuple[tuple[str, str | bytes], ...]:
        leaf, key = self._leaf, self._key
        if self.settings.ca_tls is not None and leaf is not None and key is not None and self._valid(leaf):
            self.last_credential = "peer certificate"  # the channel presents it (see _channel_for)
            return ()
        token = self._usable_token()
        if token is None and leaf is not None and key is not None and self._valid(leaf):
            self.last_credential = "certificate"
            sig = key.sign(csr_pem, ec.ECDSA(hashes.SHA256()))
            return ((ca_api.CERT_METADATA, leaf.public_bytes(serialization.Encoding.DER)),
                    (ca_api.SIGNATURE_METADATA, sig))
        if token is None:
            raise AgentError("no credential: the token is missing or expired and there is no valid certificate "
                             "to renew with")
        self.last_credential = "token"
        return (("authorization", f"Bearer {token}"),)

    @staticmethod
    def _valid(cert: x509.Certificate) -> bool:
        return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC)

    # -- one certificate -----------------------------------------------------------------------
    async def renew(self) -> None:
        """Ask the CA for a certificate for a new key and publish it (``AgentError`` if refused)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.identity.uri)]),
                              critical=False)
               .sign(key, hashes.SHA256()))
        csr_pem = csr.public_bytes(serialization.Encoding.PEM)
        req = ca_api.IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=self.settings.validity_s)
        metadata = self._metadata(csr_pem)
        channel = await self._channel_for(self.last_credential == "peer certificate")
        call = channel.unary_unary(ca_api.METHOD, request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=ca_api.IstioCertificateResponse.FromString)
        try:
            resp = await call(req, metadata=metadata, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise AgentError(f"CA {self.settings.ca_address} refused the CSR for {self.identity}: "
                             f"{exc.code().name}: {exc.details()}") from None
        self._publish(key, list(resp.cert_chain), list(resp.root_cert.ca_cert))

    async def _channel_for(self, present_certificate: bool) -> grpc.aio.Channel:
        """The channel to the CA; over TLS, one presenting the current certificate when asked to
        (made anew when that certificate changed)."""
        s = self.settings
        serial = self.serial if present_certificate else 0
        if self._channel is not None and (s.ca_tls is None or serial == self._channel_serial):
            return self._channel
        if self._channel is not None:
            await self._channel.close(None)
        chain = key_pem = None
        trust = self.secrets.get(ROOT_CA)
        if present_certificate:
            cert = self.secrets.get(DEFAULT_CERT)
            assert isinstance(cert, CertificateSecret)
            chain, key_pem = cert.chain_pem, cert.key_pem
        self._channel = pilot_channel(s.ca_address, s.ca_tls, path="agent.ca_tls", client_chain=chain,
                                      client_key=key_pem,
                                      extra_roots=trust.roots_pem if isinstance(trust, TrustSecret) else b"")
        self._channel_serial = serial
        return self._channel

    def _publish(self, key: ec.EllipticCurvePrivateKey, chain_pems: list[str], root_pems: list[str]) -> None:
        certs = [c for pem in chain_pems for c in x509.load_pem_x509_certificates(pem.encode())]
        if not certs:
            raise AgentError(f"CA {self.settings.ca_address} answered an empty certificate chain")
        roots = [c for pem in root_pems for c in x509.load_pem_x509_certificates(pem.encode())]
        if not roots:  # an older CA: the root is the chain's last element
            roots = [certs[-1]]
        leaf = certs[0]
        if self.identity.uri not in uri_sans(leaf):
            raise AgentError(f"the CA issued a certificate for {uri_sans(leaf)}, not {self.identity}")
        served = [c for c in certs if c not in roots] or [leaf]
        pem = serialization.Encoding.PEM
        chain = b"".join(c.public_bytes(pem) for c in served)
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        # Roots first: a context that trusts the new root is ready before a peer presents it.
        self.secrets.set(ROOT_CA, TrustSecret(b"".join(r.public_bytes(pem) for r in roots)))
        self.secrets.set(DEFAULT_CERT, CertificateSecret(chain, key_pem))
        self._key, self._leaf = key, leaf
        self.serial = leaf.serial_number
        self.not_after = leaf.not_valid_after_utc
        self.rotations += 1
        log.info("agent: certificate for %s, serial %x, valid until %s (%s)", self.identity, self.serial,
                 self.not_after.isoformat(timespec="seconds"), self.last_credential)

    # -- lifecycle -----------------------------------------------------------------------------
    def _renew_delay(self) -> float:
        """About half the remaining lifetime, +/- 10% of it."""
        assert self.not_after is not None
        left = (self.not_after - datetime.datetime.now(datetime.UTC)).total_seconds()
        return max(0.1, left * random.uniform(0.4, 0.6))

    async def start(self, timeout_s: float = 30.0) -> None:
        """Get the first certificate (retrying until ``timeout_s``), then keep it current."""
        deadline = time.monotonic() + timeout_s
        delay = _RETRY_MIN_S
        while True:
            try:
                await self.renew()
                break
            except AgentError as exc:
                self.failures += 1
                self.last_error = str(exc)
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("agent: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        self._task = asyncio.get_running_loop().create_task(self._rotate())

    async def _rotate(self) -> None:
        delay = self._renew_delay()
        while True:
            self.next_rotation_at = time.time() + delay
            await asyncio.sleep(delay)
            try:
                await self.renew()
                self.last_error = ""
                delay = self._renew_delay()
            except (MeshError, grpc.RpcError, OSError) as exc:
                self.failures += 1
                self.last_error = str(exc)
                left = (self.not_after - datetime.datetime.now(datetime.UTC)).total_seconds() \
                    if self.not_after else 0.0
                delay = min(_RETRY_MAX_S, max(_RETRY_MIN_S, left / 8))
                log.warning("agent: renewal failed (%s); the certificate has %.0f s left; retrying in %.1f s",
                            exc, left, delay)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(None)

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity.uri, "ca": self.settings.ca_address, "serial": f"{self.serial:x}",
                "not_after": self.not_after.isoformat() if self.not_after else None,
                "next_rotation_at": self.next_rotation_at or None, "certificates": self.rotations,
                "failures": self.failures, "last_credential": self.last_credential,
                "last_error": self.last_error or None}


__all__ = ["AgentError", "AgentSettings", "WorkloadAgent", "settings_from_config", "token_claims"]
