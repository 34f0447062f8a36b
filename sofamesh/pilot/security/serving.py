"""Pilot's own serving certificate for its TLS xDS port (istiod's 15012): a key made here, signed
by Pilot's CA with DNS / IP SANs (the configured host names, ``localhost``, ``127.0.0.1``, ``::1``),
kept with the CA's roots in a private :class:`SecretStore` that the port's TLS context reads at
each handshake. Re-issued at half its lifetime, and at once when the CA's roots change (a root
rotation step): new handshakes get the new certificate, open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sofamesh.core.net.loop import cancel
from sofamesh.core.net.secrets import CertificateSecret, SecretStore, TrustSecret
from sofamesh.pilot.security.ca import CertificateAuthority, SignRequest

log = logging.getLogger("sofamesh.pilot.ca")

SERVING_CERT = "pilot-serving"
"""The secret name of Pilot's serving certificate in :attr:`ServingCertificate.secrets`."""
TRUST = "pilot-roots"
"""The secret name of the roots client certificates are verified against."""
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_CHECK_S = 1.0  # how often the roots are compared (a list comparison; signing happens only on change) when
# nothing told it the CA changed


class ServingCertificate:
    """Keeps :data:`SERVING_CERT` and :data:`TRUST` current in ``secrets``."""

    def __init__(self, ca: CertificateAuthority, spiffe_id: str, hostnames: tuple[str, ...], ttl_s: float) -> None:
        self.ca = ca
        self.spiffe_id = spiffe_id
        self.hosts = tuple(dict.fromkeys((*hostnames, *LOCAL_HOSTS)))
        self.ttl = datetime.timedelta(seconds=ttl_s)
        self.secrets = SecretStore()
        self.issued = 0
        self.serial = 0
        self.not_after: datetime.datetime | None = None
        self._renew_at: datetime.datetime | None = None
        self._roots: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def issue(self) -> None:
        """Sign a certificate for a new key and publish it with the CA's current roots."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        roots = self.ca.roots()
        issued = await self.ca.sign(SignRequest(csr, self.spiffe_id, self.ttl, self.hosts))
        leaf = x509.load_pem_x509_certificate(issued.chain[0].encode())
        root_set = {r.strip() for r in issued.roots}
        chain = "".join(p if p.endswith("\n") else p + "\n" for p in issued.chain if p.strip() not in root_set)
        pem = serialization.Encoding.PEM
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self.secrets.set(TRUST, TrustSecret("".join(issued.roots).encode()))
        self.secrets.set(SERVING_CERT, CertificateSecret(chain.encode(), key_pem))
        now = datetime.datetime.now(datetime.UTC)
        self._roots = roots
        self.serial, self.not_after = leaf.serial_number, leaf.not_valid_after_utc
        self._renew_at = now + (leaf.not_valid_after_utc - now) / 2
        self.issued += 1
        log.info(
            "pilot: serving certificate %x for %s, valid until %s",
            self.serial,
            ", ".join(self.hosts),
            self.not_after.isoformat(timespec="seconds"),
        )

    def due(self) -> bool:
        """Past half the lifetime, or the CA's roots changed since the last issue."""
        now = datetime.datetime.now(datetime.UTC)
        return self._renew_at is None or now >= self._renew_at or self.ca.roots() != self._roots

    async def start(self) -> None:
        await self.issue()
        self._task = asyncio.get_running_loop().create_task(self._keep())

    def check_now(self) -> None:
        """The CA changed (a rotation step, here or through another replica): check without waiting."""
        self._wake.set()

    async def _keep(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _CHECK_S)
            self._wake.clear()
            if not self.due():
                continue
            try:
                await self.issue()
            except Exception:  # the CA could not sign: keep serving the current one, retry next tick
                log.exception("pilot: could not renew the serving certificate (valid until %s)", self.not_after)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)

    def describe(self) -> dict[str, Any]:
        return {
            "hosts": list(self.hosts),
            "identity": self.spiffe_id,
            "serial": f"{self.serial:x}",
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "issued": self.issued,
        }


__all__ = ["LOCAL_HOSTS", "SERVING_CERT", "TRUST", "ServingCertificate"]
