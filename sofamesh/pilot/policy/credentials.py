"""Kubernetes ``Secret`` objects (``apiVersion: v1``) as the credentials an Istio Gateway names in
``credentialName``: their schema, the admission checks (base64, PEM, the key matches the
certificate), the PEM they hold, the SDS names Istio gives them, and the form reads show (the
private key redacted). No I/O.

Keys, as Istio's secret controller reads them: the certificate chain in ``tls.crt`` (or ``cert``),
its key in ``tls.key`` (or ``key``), the client CA bundle for MUTUAL in ``ca.crt`` (or ``cacert``),
either in the same Secret or in a Secret named ``NAME-cacert``. ``stringData`` is merged into
``data`` at admission, as the Kubernetes API server does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sofamesh.core.net.secrets import CertificateSecret, Secret, TrustSecret
from sofamesh.pilot.policy.schema import Bool, MapOf, Obj, Report, Str, entry

CERT_KEYS = ("tls.crt", "cert")
KEY_KEYS = ("tls.key", "key")
CA_KEYS = ("ca.crt", "cacert")
SECRET_TYPES = ("kubernetes.io/tls", "Opaque", "istio.io/key-and-cert", "generic")
SDS_PREFIX = "kubernetes://"
"""The prefix of a credential's SDS resource name (Istio's ``kubernetes://NAME``)."""
CA_SUFFIX = "-cacert"
"""A credential's client CA bundle: SDS ``kubernetes://NAME-cacert``, or a Secret ``NAME-cacert``."""
REDACTED = "<redacted>"

if TYPE_CHECKING:
    from sofamesh.pilot.policy.resource import Resource

SECRET = Obj({"type": Str(), "data": MapOf(Str()), "stringData": MapOf(Str()), "immutable": Bool()})


@dataclass(frozen=True, slots=True)
class Credential:
    """What a Secret holds for a gateway server: a chain and key, a CA bundle, or both (PEM)."""

    chain_pem: bytes | None
    key_pem: bytes | None
    ca_pem: bytes | None


def normalize(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form: ``stringData`` base64-encoded into ``data`` (it wins on a clash, as in Kubernetes)."""
    out = {k: v for k, v in fields.items() if k != "stringData"}
    string_data = fields.get("stringData")
    if isinstance(string_data, Mapping) and string_data:
        data = dict(out.get("data") or {})
        for k, v in string_data.items():
            data[str(k)] = base64.b64encode(str(v).encode()).decode()
        out["data"] = data
    return out


def _first(data: Mapping[str, bytes], keys: tuple[str, ...]) -> tuple[str, bytes] | None:
    for k in keys:
        if k in data:
            return k, data[k]
    return None


def _decoded(fields: Mapping[str, Any], report: Report) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, v in (fields.get("data") or {}).items():
        try:
            out[str(k)] = base64.b64decode(str(v), validate=True)
        except (binascii.Error, ValueError) as exc:
            report.error(entry("data", str(k)), f"not base64: {exc}")
    for k, v in (fields.get("stringData") or {}).items():
        out[str(k)] = str(v).encode()
    return out


def _certificates(pem: bytes, path: str, report: Report) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        report.error(path, f"not a PEM certificate: {exc}")
        return []
    return certs


def check_secret(namespace: str, name: str, fields: Mapping[str, Any], report: Report) -> None:
    """Admission: the type is one Istio reads, and what the keys hold parses and fits together."""
    kind = fields.get("type") or "Opaque"
    if kind not in SECRET_TYPES:
        report.error("type", f"secret type {kind!r} is not served to gateways (known: {', '.join(SECRET_TYPES)})")
        return
    data = _decoded(fields, report)
    if report.errors:
        return
    cert, key, ca = _first(data, CERT_KEYS), _first(data, KEY_KEYS), _first(data, CA_KEYS)
    if cert is None and key is None and ca is None:
        report.error(
            "data", "no credential: give tls.crt and tls.key (a server certificate), and/or ca.crt (a client CA bundle)"
        )
        return
    if (cert is None) != (key is None):
        have, miss = (cert, "tls.key") if key is None else (key, "tls.crt")
        assert have is not None
        report.error(entry("data", miss), f"required with {have[0]}: a certificate and its key go together")
        return
    if ca is not None:
        _certificates(ca[1], entry("data", ca[0]), report)
    if cert is None or key is None:
        return
    chain = _certificates(cert[1], entry("data", cert[0]), report)
    try:
        private = serialization.load_pem_private_key(key[1], password=None)
    except (ValueError, TypeError) as exc:
        report.error(entry("data", key[0]), f"not an unencrypted PEM private key: {exc}")
        return
    if chain:
        pem = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.PEM
        if private.public_key().public_bytes(enc, pem) != chain[0].public_key().public_bytes(enc, pem):
            report.error(
                entry("data", key[0]),
                f"the private key does not match the certificate in {cert[0]} "
                f"(subject {chain[0].subject.rfc4514_string()})",
            )


def credential(fields: Mapping[str, Any]) -> Credential:
    """The PEM of an admitted Secret (its stored, normalized fields)."""
    data: dict[str, bytes] = {}
    for k, v in (fields.get("data") or {}).items():
        try:
            data[str(k)] = base64.b64decode(str(v))
        except (binascii.Error, ValueError):
            continue
    cert, key, ca = _first(data, CERT_KEYS), _first(data, KEY_KEYS), _first(data, CA_KEYS)
    return Credential(cert[1] if cert else None, key[1] if key else None, ca[1] if ca else None)


def served(secrets: Iterable[Resource]) -> dict[str, Secret]:
    """What the Secrets of one namespace give a gateway there, by name (without ``kubernetes://``)."""
    creds = {r.name: credential(r.spec) for r in secrets if r.kind == "Secret" and not r.group}
    out: dict[str, Secret] = {}
    for name, c in creds.items():
        if c.chain_pem and c.key_pem:
            out[name] = CertificateSecret(c.chain_pem, c.key_pem)
        elif c.ca_pem:  # a CA-only Secret (``NAME-cacert``)
            out[name] = TrustSecret(c.ca_pem)
    for name, c in creds.items():  # the CA of a compound Secret, unless a NAME-cacert Secret holds one
        ca = name + CA_SUFFIX
        if c.ca_pem and c.chain_pem and c.key_pem and not isinstance(out.get(ca), TrustSecret):
            out[ca] = TrustSecret(c.ca_pem)
    return out


def redacted(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What reads show: every private key replaced by :data:`REDACTED` (certificates stay)."""
    out = dict(fields)
    data = fields.get("data")
    if isinstance(data, Mapping):
        out["data"] = {k: (REDACTED if k in KEY_KEYS else v) for k, v in data.items()}
    return out


def secret_name(credential_name: str) -> str:
    """A ``credentialName`` -> the Secret it names (``kubernetes://NAME`` or ``NAME``)."""
    return credential_name[len(SDS_PREFIX) :] if credential_name.startswith(SDS_PREFIX) else credential_name


def sds_name(secret: str) -> str:
    """The SDS resource name of a Secret's certificate: ``kubernetes://NAME``."""
    return SDS_PREFIX + secret


def sds_ca_name(secret: str) -> str:
    """The SDS resource name of a Secret's client CA bundle: ``kubernetes://NAME-cacert``."""
    return SDS_PREFIX + secret + CA_SUFFIX


__all__ = [
    "CA_SUFFIX",
    "REDACTED",
    "SDS_PREFIX",
    "SECRET",
    "Credential",
    "check_secret",
    "credential",
    "normalize",
    "redacted",
    "sds_ca_name",
    "sds_name",
    "secret_name",
]
