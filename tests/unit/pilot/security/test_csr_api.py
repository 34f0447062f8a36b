"""Pilot's CA over Istio's CSR API: who gets a certificate, for which identity, for how long."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sofamesh.core.net.secrets import DEFAULT_CERT, ROOT_CA, CertificateSecret, SecretStore, TrustSecret
from sofamesh.core.security import ca_api
from sofamesh.core.security.agent import AgentError, AgentSettings, WorkloadAgent
from sofamesh.core.security.spiffe import SpiffeId, uri_sans
from sofamesh.pilot.app import Pilot
from tests.unit.pilot.conftest import run, running_pilot

WEB = "spiffe://cluster.local/ns/default/sa/web"


def _agent(pilot: Pilot, token: str | None, store: SecretStore | None = None, **kw: object) -> WorkloadAgent:
    return WorkloadAgent(AgentSettings(f"127.0.0.1:{pilot.xds_port}", token=token, **kw),  # type: ignore[arg-type]
                         store or SecretStore())


def _leaf(store: SecretStore) -> tuple[x509.Certificate, list[x509.Certificate], list[x509.Certificate]]:
    cs, ts = store.get(DEFAULT_CERT), store.get(ROOT_CA)
    assert isinstance(cs, CertificateSecret) and isinstance(ts, TrustSecret)
    chain = x509.load_pem_x509_certificates(cs.chain_pem)
    return chain[0], chain, x509.load_pem_x509_certificates(ts.roots_pem)


async def _raw_csr(pilot: Pilot, uri: str, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
           .sign(key, hashes.SHA256()))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pilot.xds_port}") as ch:
        call = ch.unary_unary(ca_api.METHOD, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=ca_api.IstioCertificateResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(ca_api.IstioCertificateRequest(csr=csr.public_bytes(serialization.Encoding.PEM).decode()),
                       metadata=metadata, timeout=5)
    return info.value


def test_a_token_gets_a_short_lived_certificate_naming_its_spiffe_id_and_chaining_to_pilots_root(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path) as pilot:
            token, grant = pilot.tokens.issue("default", "web", 600)
            store = SecretStore()
            agent = _agent(pilot, token, store, validity_s=3600)
            await agent.start()
            await agent.stop()
            leaf, chain, roots = _leaf(store)
            assert uri_sans(leaf) == [WEB] == [grant.identity.uri]
            lifetime = leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
            assert datetime.timedelta(minutes=59) < lifetime <= datetime.timedelta(hours=1)
            root_file = (tmp_path / "security" / "root-cert.pem").read_bytes()
            assert roots == x509.load_pem_x509_certificates(root_file)
            leaf.verify_directly_issued_by(roots[0])
            assert roots[0] not in chain  # the served chain stops below the root
            assert pilot.certificates.signed == 1
    run(go())


def test_a_csr_for_an_identity_the_token_does_not_grant_is_permission_denied_naming_both(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path) as pilot:
            token, grant = pilot.tokens.issue("default", "web", 600)
            err = await _raw_csr(pilot, "spiffe://cluster.local/ns/prod/sa/db", (("authorization", f"Bearer {token}"),))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.details() == (f"the CSR asks for spiffe://cluster.local/ns/prod/sa/db but token {grant.jti} "
                                     f"grants {WEB}")
            assert pilot.certificates.refused == {"PERMISSION_DENIED": 1}
    run(go())
    assert any("refused (PERMISSION_DENIED)" in r.message and "sa/db" in r.message for r in caplog.records)


def test_no_token_a_tampered_token_and_a_revoked_token_are_unauthenticated(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path) as pilot:
            err = await _raw_csr(pilot, WEB, ())
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "no credential" in err.details()
            token, grant = pilot.tokens.issue("default", "web", 600)
            head, body, sig = token.split(".")
            forged_body = body.replace(body[5], "A" if body[5] != "A" else "B", 1)
            for bad, why in ((f"{head}.{forged_body}.{sig}", "token refused"),
                             (f"{head}.{body}.{sig[:-4]}AAAA", "signature does not verify"),
                             ("not-a-token", "not a valid token")):
                err = await _raw_csr(pilot, WEB, (("authorization", f"Bearer {bad}"),))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED and why in err.details(), err.details()
            pilot.tokens.revoke(grant.jti, grant.expires_at)
            err = await _raw_csr(pilot, WEB, (("authorization", f"Bearer {token}"),))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED and f"{grant.jti} has been revoked" in err.details()
    run(go())


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path) as pilot:
            token, _ = pilot.tokens.issue("default", "web", 60, now=time.time() - 3600)
            err = await _raw_csr(pilot, WEB, (("authorization", f"Bearer {token}"),))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert err.details() == "token refused: the token has expired"
    run(go())


def test_tokens_and_the_root_survive_a_pilot_restart(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path) as pilot:
            token, _ = pilot.tokens.issue("default", "web", 600)
            root1 = pilot.ca.roots()
        async with running_pilot(tmp_path) as pilot:
            assert pilot.ca.roots() == root1
            store = SecretStore()
            agent = _agent(pilot, token, store)
            await agent.start()
            await agent.stop()
            _leaf(store)[0].verify_directly_issued_by(x509.load_pem_x509_certificate(root1[0].encode()))
    run(go())


def test_a_renewal_after_the_token_expired_authenticates_with_the_current_certificate(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path) as pilot:
            token, _ = pilot.tokens.issue("default", "web", 600)
            store = SecretStore()
            agent = _agent(pilot, token, store)
            await agent.renew()
            first = _leaf(store)[0].serial_number
            agent.settings = AgentSettings(agent.settings.ca_address, token=None)
            await agent.renew()
            assert agent.last_credential == "certificate"
            assert _leaf(store)[0].serial_number != first
            await agent.stop()
            other = _agent(pilot, None, SecretStore(), identity=SpiffeId("cluster.local", "default", "web"))
            with pytest.raises(AgentError, match="no credential"):
                await other.renew()
    run(go())


def test_the_lifetime_asked_for_is_clamped_to_the_configured_bounds(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path, ca={"min_workload_ttl_s": 120, "max_workload_ttl_s": 3600,
                                               "workload_ttl_s": 600}) as pilot:
            token, _ = pilot.tokens.issue("default", "web", 600)
            for asked, expected in ((1, 120), (0, 600), (10**6, 3600)):
                store = SecretStore()
                agent = _agent(pilot, token, store, validity_s=asked)
                await agent.renew()
                await agent.stop()
                left = (_leaf(store)[0].not_valid_after_utc - datetime.datetime.now(datetime.UTC)).total_seconds()
                assert expected - 5 < left <= expected
    run(go())


def _mint_cacerts(d: Path) -> x509.Certificate:
    """An operator's root and intermediate in Istio's cacerts layout; returns the root."""
    from sofamesh.certs import load_or_mint_ca

    root = load_or_mint_ca(d / "root")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "operator intermediate")])
    inter = (x509.CertificateBuilder().subject_name(name).issuer_name(root.cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .sign(root.key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    d.mkdir(exist_ok=True)
    (d / "ca-cert.pem").write_bytes(inter.public_bytes(pem))
    (d / "ca-key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    (d / "root-cert.pem").write_bytes(root.cert.public_bytes(pem))
    (d / "cert-chain.pem").write_bytes(inter.public_bytes(pem) + root.cert.public_bytes(pem))
    return root.cert


def test_an_operators_intermediate_in_the_cacerts_layout_signs_with_the_chain_to_the_operators_root(
        tmp_path: Path) -> None:
    root = _mint_cacerts(tmp_path / "cacerts")

    async def go() -> None:
        async with running_pilot(tmp_path / "data", ca={"options": {"cacerts": str(tmp_path / "cacerts")}}) as pilot:
            token, _ = pilot.tokens.issue("default", "web", 600)
            store = SecretStore()
            agent = _agent(pilot, token, store)
            await agent.renew()
            await agent.stop()
            leaf, chain, roots = _leaf(store)
            assert roots == [root]
            assert [c.subject.rfc4514_string() for c in chain[1:]] == ["CN=operator intermediate"]
            leaf.verify_directly_issued_by(chain[1])
            chain[1].verify_directly_issued_by(root)
            assert not (tmp_path / "data" / "security" / "ca-root.pem").exists()
    run(go())


def test_a_cacerts_key_that_does_not_match_its_certificate_stops_pilot_naming_the_files(tmp_path: Path) -> None:
    from sofamesh.core.errors import ConfigError

    _mint_cacerts(tmp_path / "cacerts")
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cacerts" / "ca-key.pem").write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    async def go() -> None:
        async with running_pilot(tmp_path / "data", ca={"options": {"cacerts": str(tmp_path / "cacerts")}}):
            pass
    with pytest.raises(ConfigError, match=r"ca-key.pem is not the key of .*ca-cert.pem"):
        run(go())


def test_token_create_prints_a_token_bound_to_the_identity_and_revoke_refuses_it(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_pilot(tmp_path) as pilot:
            url = f"http://127.0.0.1:{pilot.api_port}"

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([sys.executable, "-m", "sofamesh", "pilot", "token", *args, "--pilot", url,
                                       "--admin-token-file", str(pilot.admin.path)],
                                      capture_output=True, text=True, timeout=30)

            out = await asyncio.to_thread(cli, "create", "--namespace", "shop", "--service-account", "cart",
                                          "--ttl", "90m")
            assert out.returncode == 0, out.stderr
            grant = pilot.tokens.verify(out.stdout.strip())
            assert grant.identity.uri == "spiffe://cluster.local/ns/shop/sa/cart"
            assert grant.expires_at - 5400 == pytest.approx(time.time(), abs=5)
            bad = await asyncio.to_thread(cli, "create", "--namespace", "Bad Name", "--service-account", "x")
            assert bad.returncode == 1 and "namespace" in bad.stderr
            revoked = await asyncio.to_thread(cli, "revoke", grant.jti)
            assert revoked.returncode == 0, revoked.stderr
            with pytest.raises(Exception, match="revoked"):
                pilot.tokens.verify(out.stdout.strip())
    run(go(), timeout=90)
