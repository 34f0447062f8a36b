"""The built-in CA. Either a root it creates on first start and keeps in Pilot's security storage
(``ca-root.pem``: certificate and key in one private blob, so replicas racing to create it end up
with one; ``root-cert.pem``: the public certificate for operators), or, with ``cacerts: DIR``, the
operator's intermediate in Istio's ``cacerts`` layout: ``ca-cert.pem`` (the signing certificate),
``ca-key.pem`` (its key), ``root-cert.pem`` (the root(s) workloads trust), ``cert-chain.pem``
(``ca-cert.pem`` up to the root).

Root rotation (own root only), Istio's three steps, each a call to :meth:`BuiltinCa.rotate_root`:
``prepare`` creates the next root (``ca-root-next.pem``) and trusts it beside the current one,
which still signs; ``activate`` makes the next root the signer and keeps trusting the previous one
(``ca-trusted-extra.pem``); ``finish`` stops trusting the previous root. Workloads get the trust
bundle with every certificate, so between steps wait until every workload has renewed (one
workload lifetime): then no peer ever meets a certificate its bundle does not trust.

Workload certificates: no subject, the URI SAN (critical) only, EC or RSA public key from the CSR,
server and client auth, signed with SHA-256.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.security.ca import CaContext, CertificateAuthority, Issued, SignRequest

_ROOT_BLOB = "ca-root.pem"
_NEXT_BLOB = "ca-root-next.pem"  # the root being introduced (certificate and key); empty when none
_EXTRA_TRUSTED = "ca-trusted-extra.pem"  # the previous root, still trusted after activate; empty when none
ROTATION_STEPS = ("prepare", "activate", "finish")
_ROOT_PUBLIC = "root-cert.pem"
_PEM = serialization.Encoding.PEM
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(_PEM).decode()


def _new_root(trust_domain: str, days: int, rotated: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # a rotated root gets a name of its own: operators (and openssl) tell the two roots apart
    suffix = f" {now:%Y-%m-%dT%H:%M:%SZ}" if rotated else ""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"sofamesh root CA ({trust_domain}){suffix}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(_PEM) + key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption())


def _load_key(data: bytes, where: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(where, f"not a PEM private key without a password: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(where, f"{type(key).__name__} keys cannot sign here (EC or RSA)")
    return key


def _certs(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(where, f"not PEM certificates: {exc}") from None
    return certs


class BuiltinCa(CertificateAuthority):
    """Signs with its own root, or with the operator's intermediate."""

    def __init__(self, context: CaContext) -> None:
        opts = context.check_options(["cacerts", "root_ttl_days"])
        self.name = context.name
        self.context = context
        self.cacerts = Path(opts["cacerts"]) if opts.get("cacerts") else None
        self.root_ttl_days = int(opts.get("root_ttl_days", 3650))
        self._signer: x509.Certificate | None = None
        self._key: SigningKey | None = None
        self._intermediates: list[x509.Certificate] = []
        self._roots: list[x509.Certificate] = []
        self._root_pems: list[str] = []
        self._tail: list[str] = []
        self._previous: list[x509.Certificate] = []
        self.mode = ""
        self.rotation = "none"  # own root: none, prepared, activated (module docstring)

    async def start(self) -> None:
        if self.cacerts is not None:
            self._load_cacerts(self.cacerts)
        else:
            self._load_or_create_root()
        self._chain_tail()

    def reload(self) -> None:
        """Another replica took a rotation step: read the roots and the signer again."""
        if self.cacerts is None:
            self._load_or_create_root()
            self._chain_tail()

    def _chain_tail(self) -> None:
        self._root_pems = [_pem(r) for r in self._roots]
        assert self._signer is not None
        path = [self._signer, *self._intermediates]
        root = next((r for r in self._roots if _issued_by(path[-1], r)), self._roots[0])
        # After the leaf: the signer and intermediates (unless the signer is the root), then the root.
        self._tail = [_pem(c) for c in path if c not in self._roots] + [_pem(root)]

    def _blob(self, name: str) -> bytes:
        return self.context.storage.read(name) or b""

    def _load_or_create_root(self) -> None:
        st = self.context.storage
        blob = st.read(_ROOT_BLOB)
        if blob is None:
            st.create(_ROOT_BLOB, _new_root(self.context.trust_domain, self.root_ttl_days), private=True)
            blob = st.read(_ROOT_BLOB)
            assert blob is not None
        where = f"{st.describe()}/{_ROOT_BLOB}"
        certs = _certs(blob, where)
        if len(certs) != 1:
            raise ConfigError(where, f"expected one root certificate and its key, found {len(certs)} certificates")
        self._signer, self._key = certs[0], _load_key(blob, where)
        nxt, previous = self._blob(_NEXT_BLOB), self._blob(_EXTRA_TRUSTED)
        nxt_certs = _certs(nxt, f"{st.describe()}/{_NEXT_BLOB}")[:1] if nxt.strip() else []
        self._previous = _certs(previous, f"{st.describe()}/{_EXTRA_TRUSTED}") if previous.strip() else []
        self._roots = [certs[0], *nxt_certs, *self._previous]
        public = b"".join(r.public_bytes(_PEM) for r in self._roots)
        if st.read(_ROOT_PUBLIC) != public:
            st.write(_ROOT_PUBLIC, public)
        self.mode = "self-signed root"
        self.rotation = "prepared" if nxt_certs else "activated" if self._previous else "none"

    def rotate_root(self, step: str) -> dict[str, Any]:
        """One step of a root rotation (module docstring); what ``/debug/ca`` then shows."""
        st = self.context.storage
        if self.cacerts is not None:
            raise ConfigError("step", "the root of a cacerts intermediate is the operator's: replace the "
                                      "cacerts files (new root-cert.pem with both roots first) and restart")
        if step not in ROTATION_STEPS:
            raise ConfigError("step", f"unknown step {step!r} (known: {', '.join(ROTATION_STEPS)})")
        want = {"prepare": "none", "activate": "prepared", "finish": "activated"}[step]

        def take_step(blobs: Mapping[str, bytes | None]) -> dict[str, bytes]:
            """The step on the blobs as stored now (another replica may have taken one meanwhile)."""
            root, nxt, extra = (blobs[n] or b"" for n in (_ROOT_BLOB, _NEXT_BLOB, _EXTRA_TRUSTED))
            at = "prepared" if nxt.strip() else "activated" if extra.strip() else "none"
            if at != want or not root.strip():
                raise ConfigError("step", f"cannot {step}: the rotation is at {at!r} "
                                          f"(steps in order: {', '.join(ROTATION_STEPS)})")
            if step == "prepare":
                return {_NEXT_BLOB: _new_root(self.context.trust_domain, self.root_ttl_days, rotated=True)}
            if step == "activate":  # the current root stays trusted beside the one that now signs
                current = _certs(root, f"{st.describe()}/{_ROOT_BLOB}")[0]
                return {_EXTRA_TRUSTED: current.public_bytes(_PEM), _ROOT_BLOB: nxt, _NEXT_BLOB: b""}
            return {_EXTRA_TRUSTED: b""}

        # one compare-and-set of the three blobs: two replicas stepping at once take the step once
        st.update_many((_ROOT_BLOB, _NEXT_BLOB, _EXTRA_TRUSTED), take_step, private=True)
        self._load_or_create_root()
        self._chain_tail()
        return self.describe()

    def _load_cacerts(self, d: Path) -> None:
        def read(name: str) -> bytes:
            try:
                return (d / name).read_bytes()
            except OSError as exc:
                raise ConfigError("ca.options.cacerts", f"cannot read {d / name}: {exc.strerror}") from None

        signer = _certs(read("ca-cert.pem"), str(d / "ca-cert.pem"))[0]
        key = _load_key(read("ca-key.pem"), str(d / "ca-key.pem"))
        roots = _certs(read("root-cert.pem"), str(d / "root-cert.pem"))
        chain = _certs(read("cert-chain.pem"), str(d / "cert-chain.pem")) if (d / "cert-chain.pem").exists() \
            else [signer]
        if not roots:
            raise ConfigError("ca.options.cacerts", f"{d / 'root-cert.pem'} holds no certificate")
        if key.public_key().public_numbers() != signer.public_key().public_numbers():  # type: ignore[union-attr]
            raise ConfigError("ca.options.cacerts", f"{d / 'ca-key.pem'} is not the key of {d / 'ca-cert.pem'}")
        try:
            bc = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            raise ConfigError("ca.options.cacerts", f"{d / 'ca-cert.pem'} is not a CA certificate")
        intermediates = [c for c in chain if c != signer and c not in roots]
        path = [signer, *intermediates]
        for child, parent in itertools.pairwise(path):
            _check_issued(child, parent, d)
        if not any(_issued_by(path[-1], r) for r in roots):
            raise ConfigError("ca.options.cacerts", f"{d / 'cert-chain.pem'} does not lead to a root in "
                                                    f"{d / 'root-cert.pem'}")
        self._signer, self._key, self._intermediates, self._roots = signer, key, intermediates, roots
        self.mode = f"intermediate from {d}"

    # -- the contract --------------------------------------------------------------------------
    def roots(self) -> list[str]:
        return list(self._root_pems)

    def issuers(self) -> list[x509.Certificate]:
        # a certificate the previous root signed still renews while that root is trusted
        return [self._signer, *self._previous] if self._signer is not None else []

    async def sign(self, request: SignRequest) -> Issued:
        signer, key = self._signer, self._key
        assert signer is not None and key is not None, "the CA is not started"
        pub = request.csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise ConfigError("csr", f"{type(pub).__name__} keys are not accepted (EC, RSA, Ed25519)")
        now = datetime.datetime.now(datetime.UTC)
        backdate = min(datetime.timedelta(seconds=60), request.ttl / 10)
        not_after = min(now + request.ttl, signer.not_valid_after_utc)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(signer.subject)
                .public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(now - backdate).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(request.spiffe_id),
                                                            *map(_host_san, request.hosts)]), critical=True)
                .sign(key, hashes.SHA256()))
        return Issued(chain=[_pem(cert), *self._tail], roots=list(self._root_pems))

    def describe(self) -> dict[str, Any]:
        s = self._signer
        return {"name": self.name, "mode": self.mode, "trust_domain": self.context.trust_domain,
                "root_rotation": self.rotation,
                "storage": self.context.storage.describe(),
                "signer": {"subject": s.subject.rfc4514_string(), "serial": f"{s.serial_number:x}",
                           "not_after": s.not_valid_after_utc.isoformat()} if s else None,
                "roots": [{"subject": r.subject.rfc4514_string(), "serial": f"{r.serial_number:x}",
                           "not_after": r.not_valid_after_utc.isoformat()} for r in self._roots]}


def _host_san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_issued(child: x509.Certificate, parent: x509.Certificate, d: Path) -> None:
    if not _issued_by(child, parent):
        raise ConfigError("ca.options.cacerts", f"{d / 'cert-chain.pem'}: {child.subject.rfc4514_string()} is not "
                                                f"issued by {parent.subject.rfc4514_string()}")


__all__ = ["BuiltinCa"]
