"""SDS over ADS: Envoy ``Secret`` resources -> the PEM the process's TLS contexts read
(:class:`~sofamesh.core.net.secrets.CertificateSecret` / ``TrustSecret``), for secrets a listener
names with ``sds_config: {ads: {}}`` (a gateway's ``credentialName``, served by Pilot). Pure: a
message in, a value or a ``ConfigError`` naming the field out.
"""

from __future__ import annotations

from typing import Any

from sofamesh.core.errors import ConfigError
from sofamesh.core.net.secrets import CertificateSecret, Secret, TrustSecret

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _bytes(ds: Any, path: str) -> bytes:
    which = ds.WhichOneof("specifier")
    if which == "inline_bytes":
        return bytes(ds.inline_bytes)
    if which == "inline_string":
        return str(ds.inline_string).encode()
    raise ConfigError(path, f"only inline_bytes or inline_string is supported, got {which or 'nothing'}")


def translate_secret(msg: Any) -> Secret:
    """A ``Secret`` holding a ``tls_certificate`` (chain and key) or a ``validation_context``
    (trusted CA) -> the stored form."""
    base = f"Secret {msg.name!r}"
    which = msg.WhichOneof("type")
    if which == "tls_certificate":
        tc = msg.tls_certificate
        return CertificateSecret(
            _bytes(tc.certificate_chain, f"{base}: tls_certificate.certificate_chain"),
            _bytes(tc.private_key, f"{base}: tls_certificate.private_key"),
        )
    if which == "validation_context":
        return TrustSecret(_bytes(msg.validation_context.trusted_ca, f"{base}: validation_context.trusted_ca"))
    raise ConfigError(f"{base}: {which or 'type'}", "only tls_certificate and validation_context secrets are supported")


def uses_ads(sds_config: Any) -> bool:
    """Whether an ``SdsSecretConfig`` is fetched over the ADS stream (``sds_config: {ads: {}}``)."""
    return bool(sds_config.HasField("sds_config") and sds_config.sds_config.HasField("ads"))


__all__ = ["SECRET_TYPE", "translate_secret", "uses_ads"]
