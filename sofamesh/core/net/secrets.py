"""The process's TLS secrets by SDS name: the workload certificate (``default``) and the trust
bundle (``ROOTCA``), as an agent keeps them current.

A :class:`SecretStore` holds PEM bytes in memory and counts its changes; a TLS context built from
it (``core/net/tls.py``) compares that count at each handshake and rebuilds when it moved, so a
rotated certificate is served without a restart. Nothing here does I/O or knows where secrets
come from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_CERT = "default"
"""The SDS name of the workload certificate and its key (Istio's name)."""
ROOT_CA = "ROOTCA"
"""The SDS name of the trust bundle (Istio's name)."""


@dataclass(frozen=True, slots=True)
class CertificateSecret:
    """A certificate chain (leaf first) and its private key, PEM."""

    chain_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class TrustSecret:
    """Trusted root certificates, PEM (one or more concatenated)."""

    roots_pem: bytes


Secret = CertificateSecret | TrustSecret
Watcher = Callable[[str], object]


class SecretStore:
    """Named secrets, their change count, and who to tell about a change."""

    __slots__ = ("_secrets", "_watchers", "generation")

    def __init__(self) -> None:
        self._secrets: dict[str, Secret] = {}
        self._watchers: list[Watcher] = []
        self.generation = 0
        """Grows by one on every change of any secret (compared per handshake: an int, no lock)."""

    def get(self, name: str) -> Secret | None:
        return self._secrets.get(name)

    def names(self) -> list[str]:
        return sorted(self._secrets)

    def set(self, name: str, secret: Secret) -> None:
        """Publish ``secret`` under ``name``; unchanged content is not a change."""
        if self._secrets.get(name) == secret:
            return
        self._secrets[name] = secret
        self.generation += 1
        for w in list(self._watchers):
            w(name)

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher(name)`` after each change; returns the function that stops it."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None


PROCESS_SECRETS = SecretStore()
"""The secrets of this process: the agent writes them, TLS contexts naming a secret read them."""


__all__ = ["DEFAULT_CERT", "PROCESS_SECRETS", "ROOT_CA", "CertificateSecret", "Secret", "SecretStore",
           "TrustSecret"]
