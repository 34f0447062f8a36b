"""Istio's CSR API, ``istio.v1.auth.IstioCertificateService/CreateCertificate``, served on Pilot's
xDS port (the same gRPC server as ADS, as istiod serves both on one port).

Who is asking: ``authorization: Bearer <token>`` metadata (a Pilot token), or, for a renewal, the
caller's current certificate (issued by this CA and not expired): the client certificate of the
TLS connection on Pilot's TLS xDS port (as istiod authenticates renewals on 15012), or, on the
plaintext port, the certificate in ``x-sofamesh-cert-bin`` with a signature over the CSR by its key
(``x-sofamesh-csr-signature-bin``). Nothing, or a credential that
does not verify: UNAUTHENTICATED. A CSR whose URI SANs are not exactly the identity the credential
grants: PERMISSION_DENIED naming both, logged. DNS and IP SANs of a CSR are not copied.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sofamesh.core.errors import MeshError
from sofamesh.core.security import ca_api
from sofamesh.core.security.spiffe import SpiffeId, uri_sans
from sofamesh.pilot.security.ca import CertificateAuthority, SignRequest
from sofamesh.pilot.security.tokens import TokenAuthority, TokenError

log = logging.getLogger("sofamesh.pilot.ca")


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class CertificateService:
    """Authenticates, checks and hands CSRs to the CA; counts what it did."""

    def __init__(self, ca: CertificateAuthority, tokens: TokenAuthority, trust_domain: str, *,
                 default_ttl_s: float, min_ttl_s: float, max_ttl_s: float) -> None:
        self.ca = ca
        self.tokens = tokens
        self.trust_domain = trust_domain
        self.default_ttl_s = default_ttl_s
        self.min_ttl_s = min_ttl_s
        self.max_ttl_s = max_ttl_s
        self.signed = 0
        self.by_credential: dict[str, int] = {}  # token / peer certificate / signed CSR -> certificates signed
        # gRPC peer -> the verified TLS client certificate (DER) behind it (set by the TLS xDS port)
        self.peer_certificate: Callable[[str], bytes | None] = lambda peer: None
        self.refused: dict[str, int] = {}
        self.recent_refusals: list[dict[str, Any]] = []

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(ca_api.SERVICE, {
            "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                self.CreateCertificate, request_deserializer=ca_api.IstioCertificateRequest.FromString,
                response_serializer=lambda m: m.SerializeToString())})

    # -- who is asking -------------------------------------------------------------------------
    def _by_token(self, value: str) -> tuple[SpiffeId, str]:
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'")
        try:
            grant = self.tokens.verify(token.strip())
        except TokenError as exc:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"token refused: {exc}") from None
        return grant.identity, f"token {grant.jti}"

    def _certificate(self, der: bytes) -> x509.Certificate:
        """A certificate this CA issued that is valid now (``_Refused`` otherwise)."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "the certificate metadata is not a DER certificate") \
                from None
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"certificate {cert.serial_number:x} is not valid now "
                           f"(valid {cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})")
        if not self._issued_by_us(cert):
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "the certificate was not issued by this CA")
        return cert

    @staticmethod
    def _identity_of(cert: x509.Certificate, credential: str) -> tuple[SpiffeId, str]:
        sans = uri_sans(cert)
        try:
            return SpiffeId.parse(sans[0] if sans else ""), credential
        except ValueError as exc:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"the certificate names no workload: {exc}") from None

    def _by_peer_certificate(self, der: bytes) -> tuple[SpiffeId, str]:
        cert = self._certificate(der)
        return self._identity_of(cert, f"peer certificate {cert.serial_number:x}")

    def _by_certificate(self, der: bytes, signature: bytes, csr_pem: bytes) -> tuple[SpiffeId, str]:
        cert = self._certificate(der)
        pub = cert.public_key()
        try:
            if isinstance(pub, ec.EllipticCurvePublicKey):
                pub.verify(signature, csr_pem, ec.ECDSA(hashes.SHA256()))
            elif isinstance(pub, ed25519.Ed25519PublicKey):
                pub.verify(signature, csr_pem)
            else:
                raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "renewal by certificate needs an EC or Ed25519 key")
        except InvalidSignature:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "the CSR signature does not verify with the "
                           "certificate's key") from None
        return self._identity_of(cert, f"certificate {cert.serial_number:x}")

    def _issued_by_us(self, cert: x509.Certificate) -> bool:
        for issuer in self.ca.issuers():
            try:
                cert.verify_directly_issued_by(issuer)
                return True
            except (ValueError, TypeError, InvalidSignature):
                continue
        return False

    def _caller(self, md: dict[str, str | bytes], csr_pem: bytes, peer: str) -> tuple[SpiffeId, str]:
        auth = md.get("authorization")
        if isinstance(auth, str) and auth:
            return self._by_token(auth)
        peer_der = self.peer_certificate(peer)
        if peer_der is not None:
            return self._by_peer_certificate(peer_der)
        der, sig = md.get(ca_api.CERT_METADATA), md.get(ca_api.SIGNATURE_METADATA)
        if isinstance(der, bytes) and isinstance(sig, bytes):
            return self._by_certificate(der, sig, csr_pem)
        raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "no credential: send 'authorization: Bearer <token>' "
                       "metadata (sofamesh pilot token create), or renew with the current certificate")

    # -- the call ------------------------------------------------------------------------------
    def _ttl(self, asked: int) -> datetime.timedelta:
        ttl = float(asked) if asked > 0 else self.default_ttl_s
        return datetime.timedelta(seconds=min(max(ttl, self.min_ttl_s), self.max_ttl_s))

    def _refuse(self, code: grpc.StatusCode, message: str, peer: str) -> None:
        self.refused[code.name] = self.refused.get(code.name, 0) + 1
        self.recent_refusals.append({"at": time.time(), "peer": peer, "code": code.name, "message": message})
        del self.recent_refusals[:-50]
        log.warning("CSR from %s refused (%s): %s", peer, code.name, message)

    async def CreateCertificate(self, request: Any, context: Any) -> Any:
        md = {k: v for k, v in (context.invocation_metadata() or ())}
        csr_pem = request.csr.encode()
        peer = context.peer()
        try:
            identity, credential = self._caller(md, csr_pem, peer)
            try:
                csr = x509.load_pem_x509_csr(csr_pem)
            except ValueError:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr is not a PEM certificate request") from None
            if not csr.is_signature_valid:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "the CSR's self-signature does not verify")
            if identity.trust_domain != self.trust_domain:
                raise _Refused(grpc.StatusCode.PERMISSION_DENIED,
                               f"{credential} grants {identity}, outside this CA's trust domain {self.trust_domain}")
            try:
                asked = uri_sans_of_csr(csr)
            except ValueError as exc:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            if asked != [identity.uri]:
                raise _Refused(grpc.StatusCode.PERMISSION_DENIED,
                               f"the CSR asks for {', '.join(asked) or 'no URI SAN'} but {credential} grants "
                               f"{identity}")
            issued = await self.ca.sign(SignRequest(csr, identity.uri, self._ttl(request.validity_duration)))
        except _Refused as exc:
            self._refuse(exc.code, str(exc), peer)
            await context.abort(exc.code, str(exc))
            raise AssertionError("unreachable") from None
        except MeshError as exc:
            self._refuse(grpc.StatusCode.INTERNAL, str(exc), peer)
            await context.abort(grpc.StatusCode.INTERNAL, f"the CA could not sign: {exc}")
            raise AssertionError("unreachable") from None
        self.signed += 1
        kind = credential.rsplit(" ", 1)[0]
        self.by_credential[kind] = self.by_credential.get(kind, 0) + 1
        resp = ca_api.IstioCertificateResponse(cert_chain=issued.chain)
        resp.root_cert.ca_cert.extend(issued.roots)
        return resp

    def describe(self) -> dict[str, Any]:
        return {"ca": self.ca.describe(), "trust_domain": self.trust_domain, "signed": self.signed,
                "by_credential": dict(self.by_credential),
                "refused": dict(self.refused), "recent_refusals": list(self.recent_refusals),
                "ttl_s": {"default": self.default_ttl_s, "min": self.min_ttl_s, "max": self.max_ttl_s},
                "tokens": self.tokens.describe()}


def uri_sans_of_csr(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


__all__ = ["CertificateService", "uri_sans_of_csr"]
