"""The CA plugin contract: what a certificate authority provides to Pilot.

Pilot authenticates the caller and checks the identity a CSR asks for; the CA only signs. The
built-in CA (``builtin``) keeps a self-signed root in Pilot's data directory, or signs with an
operator's intermediate (Istio's ``cacerts`` layout); a plugin may put an external CA behind the
same contract.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.options import check_options
from sofamesh.pilot.security.storage import SecretStorage


@dataclass(frozen=True, slots=True)
class CaContext:
    """What a CA factory gets: its type name, its options, the trust domain, Pilot's data directory
    and the storage its state must live in (so it can move to a store replicas share)."""

    name: str
    trust_domain: str
    storage: SecretStorage
    options: Mapping[str, Any] = field(default_factory=dict)
    data_dir: Path = Path(".")

    def check_options(self, known: Sequence[str]) -> dict[str, Any]:
        """A copy of ``options``; :class:`~sofamesh.core.errors.ConfigError` on an unknown key."""
        return check_options(self.options, known, "ca.options", f"CA {self.name!r}")


@dataclass(frozen=True, slots=True)
class SignRequest:
    """A CSR Pilot has authenticated and checked: sign ``csr``'s public key for ``spiffe_id``.

    ``hosts``: DNS names and IP addresses to add as SANs; empty for every workload certificate
    (Pilot never copies them from a CSR), set only for Pilot's own serving certificate."""

    csr: x509.CertificateSigningRequest
    spiffe_id: str
    ttl: datetime.timedelta
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Issued:
    """PEM certificates: ``chain`` leaf first, then intermediates, ending with the root that signed
    it (as istiod answers); ``roots`` every root workloads should trust now."""

    chain: list[str]
    roots: list[str]


class CertificateAuthority(ABC):
    """One CA as Pilot sees it."""

    name: str

    async def start(self) -> None:  # noqa: B027 - optional: a CA with nothing to load keeps this
        """Load or create keys and certificates (a new root on first start)."""

    async def stop(self) -> None:  # noqa: B027 - optional
        """Release what ``start`` took."""

    def reload(self) -> None:  # noqa: B027 - optional: a CA whose state no one else changes keeps this
        """Read the state again: another Pilot replica changed it in the shared storage (a root
        rotation step). Called on the event loop, never per request."""

    @abstractmethod
    async def sign(self, request: SignRequest) -> Issued:
        """Sign a workload certificate: the URI SAN ``request.spiffe_id`` (and the DNS / IP SANs of
        ``request.hosts``), valid for ``request.ttl``, usable as TLS server and client. Raise
        :class:`~sofamesh.core.errors.MeshError` when it cannot."""

    @abstractmethod
    def roots(self) -> list[str]:
        """The trust bundle (PEM certificates)."""

    def issuers(self) -> list[x509.Certificate]:
        """The certificates that sign workload certificates (a renewal's current certificate must
        be issued by one of them); by default the roots."""
        return [c for pem in self.roots() for c in x509.load_pem_x509_certificates(pem.encode())]

    def rotate_root(self, step: str) -> dict[str, Any]:
        """One step of a root rotation: ``prepare`` (a new root, trusted beside the current one),
        ``activate`` (the new root signs; the previous one stays trusted), ``finish`` (the previous
        root is no longer trusted). Returns what ``describe`` shows; raise
        :class:`~sofamesh.core.errors.ConfigError` when the CA cannot take that step."""
        raise ConfigError("step", f"CA {self.name!r} does not rotate its root")

    def describe(self) -> dict[str, Any]:
        """What ``/debug/ca`` shows."""
        return {"name": self.name}


class CaFactory(Protocol):
    """What ``pilot_register_cas`` registers."""

    def create(self, context: CaContext) -> CertificateAuthority: ...


__all__ = ["CaContext", "CaFactory", "CertificateAuthority", "Issued", "SignRequest"]
