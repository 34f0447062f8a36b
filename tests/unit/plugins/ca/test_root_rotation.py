"""The built-in CA's root rotation: prepare, activate, finish, in that order, kept across restarts."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.security.ca import CaContext, SignRequest
from sofamesh.pilot.security.storage import DirStorage
from sofamesh.plugins.ca.builtin.authority import BuiltinCa


def _ca(d: Path) -> BuiltinCa:
    ca = BuiltinCa(CaContext("builtin", "cluster.local", DirStorage(d)))
    asyncio.run(ca.start())
    return ca


def _signed_by(ca: BuiltinCa) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w")])).sign(key, hashes.SHA256())
    issued = asyncio.run(ca.sign(SignRequest(csr, "spiffe://cluster.local/ns/default/sa/w",
                                             datetime.timedelta(minutes=5))))
    leaf = x509.load_pem_x509_certificate(issued.chain[0].encode())
    return next(r for r in ca.issuers() if r.subject == leaf.issuer)


def test_a_new_root_is_trusted_first_then_signs_then_the_old_one_goes_and_each_step_survives_a_restart(
        tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    old = ca.describe()["roots"][0]["serial"]
    with pytest.raises(ConfigError, match="cannot activate: the rotation is at 'none'"):
        ca.rotate_root("activate")
    prepared = ca.rotate_root("prepare")
    new = prepared["roots"][1]["serial"]
    assert [r["serial"] for r in prepared["roots"]] == [old, new] and prepared["root_rotation"] == "prepared"
    assert f"{_signed_by(ca).serial_number:x}" == old  # the current root still signs
    ca = _ca(tmp_path)  # a restart in the middle keeps the step
    assert ca.rotation == "prepared"
    activated = ca.rotate_root("activate")
    assert [r["serial"] for r in activated["roots"]] == [new, old]
    assert f"{_signed_by(ca).serial_number:x}" == new
    assert {f"{c.serial_number:x}" for c in ca.issuers()} == {old, new}  # old certificates still renew
    assert (tmp_path / "root-cert.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    finished = _ca(tmp_path).rotate_root("finish")
    assert [r["serial"] for r in finished["roots"]] == [new] and finished["root_rotation"] == "none"
    with pytest.raises(ConfigError, match="unknown step 'rollback'"):
        _ca(tmp_path).rotate_root("rollback")
