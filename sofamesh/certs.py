"""`sofamesh certs`: a test CA and workload certificates naming SPIFFE identities (URI SANs).

For development and tests; a production mesh gets its certificates from its CA (Citadel, SPIRE).
Files written (PEM): ``ca.pem`` / ``ca-key.pem``, and per workload ``<name>.pem`` / ``<name>-key.pem``.
An existing CA in the directory is reused, so workloads minted later chain to the same root.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CertFiles:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    files: CertFiles


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def load_or_mint_ca(out: str | Path, trust_domain: str = "cluster.local", days: int = 365) -> Authority:
    """The CA in ``out`` (``ca.pem``, ``ca-key.pem``), minted first if it is not there."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    cert_p, key_p = d / "ca.pem", d / "ca-key.pem"
    files = CertFiles(str(cert_p), str(key_p))
    if cert_p.exists() and key_p.exists():
        cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        key = serialization.load_pem_private_key(key_p.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), "ca-key.pem must be an EC key"
        return Authority(cert, key, files)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sofamesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"sofamesh test CA ({trust_domain})")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _DAY)
            .not_valid_after(now + days * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_p)
    return Authority(cert, key, files)


def mint_workload(ca: Authority, spiffe_id: str, out: str | Path, name: str, *, days: int = 30,
                  dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",),
                  not_after: datetime.datetime | None = None) -> CertFiles:
    """A leaf certificate for ``spiffe_id`` (URI SAN), valid as TLS server and client, signed by ``ca``."""
    if not spiffe_id.startswith("spiffe://"):
        raise ValueError(f"a SPIFFE id starts with spiffe://, got {spiffe_id!r}")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    sans += [x509.DNSName(h) for h in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sofamesh"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _DAY)
            .not_valid_after(not_after or now + days * _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    files = CertFiles(str(d / f"{name}.pem"), str(d / f"{name}-key.pem"))
    # Key first, then cert: a reader that sees the new cert also finds the matching key.
    tmp_key, tmp_cert = Path(files.key + ".tmp"), Path(files.cert + ".tmp")
    _write_key(key, tmp_key)
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp_key.replace(files.key)
    tmp_cert.replace(files.cert)
    return files


def run(args: argparse.Namespace) -> int:
    ca = load_or_mint_ca(args.out, args.trust_domain)
    print(f"CA        {ca.files.cert}")
    for w in args.workload:
        name, _, sid = w.partition("=")
        sid = sid or f"spiffe://{args.trust_domain}/ns/default/sa/{name}"
        files = mint_workload(ca, sid, args.out, name, days=args.days)
        print(f"{name:<9} {files.cert} {files.key} {sid}")
    return 0


__all__ = ["Authority", "CertFiles", "load_or_mint_ca", "mint_workload", "run"]
