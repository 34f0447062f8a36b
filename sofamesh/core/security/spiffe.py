"""SPIFFE ids of workloads: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``, and
the URI SANs of a certificate. Pure values and parsing; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity in Istio's shape."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        for what, value in (("trust domain", self.trust_domain), ("namespace", self.namespace),
                            ("service account", self.service_account)):
            if not _LABEL.match(value):
                raise ValueError(f"{what} {value!r} is not a valid name (letters, digits, '.', '_', '-')")

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """``spiffe://td/ns/NS/sa/SA`` -> SpiffeId; ``ValueError`` naming the text otherwise."""
        if not uri.startswith("spiffe://"):
            raise ValueError(f"{uri!r} is not a SPIFFE id (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")
        td, _, path = uri[len("spiffe://"):].partition("/")
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise ValueError(f"{uri!r} is not a workload id of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>")
        return cls(td, parts[1], parts[3])


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The URI SANs of ``cert`` (a workload certificate has exactly one: its SPIFFE id)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


__all__ = ["SpiffeId", "uri_sans"]
