"""The CA's state in a store Pilot replicas share (a real etcd, a real ZooKeeper): one root however
many replicas start together, and every replica signs with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from sofamesh.core.config.model import PilotTlsConfig
from sofamesh.core.net.pilot_channel import pilot_channel
from sofamesh.core.net.secrets import DEFAULT_CERT, ROOT_CA, CertificateSecret, SecretStore, TrustSecret
from sofamesh.core.security.agent import AgentError, AgentSettings, WorkloadAgent
from sofamesh.pilot.security.shared_storage import EtcdStorage, ZookeeperStorage, security_storage
from sofamesh.pilot.security.storage import SecretStorage
from sofamesh.pilot.security.tokens import TokenAuthority, TokenError
from sofamesh.testing import free_port
from tests.integration.pilot.conftest import PilotProcess, wait_until
from tests.integration.registries.servers import EtcdServer, ZooKeeperServer, etcd, zookeeper

__all__ = ["etcd", "zookeeper"]
BOUND_S = 5.0  # a rotation step or a revocation through one replica, in force on another


def _storage_options(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        return {"endpoint": server.endpoint, "prefix": "/test/security/"}
    zk: ZooKeeperServer = request.getfixturevalue("zookeeper")
    return {"hosts": zk.hosts, "root": "/test/security"}


@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_create_is_won_by_exactly_one_writer(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    opts = _storage_options(kind, request)
    stores: list[SecretStorage] = [security_storage(kind, opts, tmp_path) for _ in range(6)]
    assert all(isinstance(s, EtcdStorage if kind == "etcd" else ZookeeperStorage) for s in stores)
    won: list[bool] = [False] * len(stores)
    go = threading.Barrier(len(stores))

    def race(i: int) -> None:
        go.wait()
        won[i] = stores[i].create("root", f"writer {i}".encode(), private=True)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert won.count(True) == 1
    winner = won.index(True)
    assert {s.read("root") for s in stores} == {f"writer {winner}".encode()}
    stores[0].write("revoked", b"[1]")
    assert stores[-1].read("revoked") == b"[1]"
    assert stores[1].read("missing") is None
    with pytest.raises(ValueError, match="bad blob name"):
        stores[0].read("../x")
    for s in stores:
        close = getattr(s, "close", None)
        if close is not None:
            close()


@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_replicas_started_together_share_one_root(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    opts = _storage_options(kind, request)
    config = {"ca": {"storage": {"type": kind, "options": opts}}}
    pilots = [PilotProcess(tmp_path / f"p{i}", config=config, ready_timeout=90) for i in range(3)]
    starters = [threading.Thread(target=p.start) for p in pilots]
    try:
        for t in starters:
            t.start()
        for t in starters:
            t.join(60)
        cas = [p.get("/debug/ca") for p in pilots]
        signers = {ca["ca"]["signer"]["serial"] for ca in cas}
        assert len(signers) == 1, cas
        assert all(ca["ca"]["storage"].startswith(kind) for ca in cas)
        # a replica restarted later reads the same root instead of making one
        pilots[0].stop()
        pilots[0].start()
        assert pilots[0].get("/debug/ca")["ca"]["signer"]["serial"] in signers
    finally:
        for p in pilots:
            p.stop()


def _issue(pilot: PilotProcess, token: str) -> x509.Certificate:
    """A workload certificate from ``pilot``'s CA, as a sidecar's agent asks for one: the root of the
    trust bundle sent with it that signed it (the leaf's signature verified with that root's key)."""
    store = SecretStore()
    agent = WorkloadAgent(AgentSettings(f"127.0.0.1:{pilot.xds_port}", token=token, validity_s=600), store)

    async def fetch() -> None:
        try:
            await agent.renew()
        finally:
            await agent.stop()

    asyncio.run(asyncio.wait_for(fetch(), 20))
    secret, trust = store.get(DEFAULT_CERT), store.get(ROOT_CA)
    assert isinstance(secret, CertificateSecret) and isinstance(trust, TrustSecret)
    leaf = x509.load_pem_x509_certificates(secret.chain_pem)[0]
    signers = []
    for root in x509.load_pem_x509_certificates(trust.roots_pem):
        with contextlib.suppress(ValueError, TypeError, InvalidSignature):
            leaf.verify_directly_issued_by(root)
            signers.append(root)
    assert len(signers) == 1, f"{len(signers)} roots of the bundle signed the leaf"
    return signers[0]


def _refused(pilot: PilotProcess, token: str) -> str:
    try:
        _issue(pilot, token)
    except AgentError as exc:
        return str(exc)
    return ""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_rotation_and_revocation_through_one_replica_reach_the_other_while_it_runs(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = {"ca": {"storage": {"type": kind, "options": _storage_options(kind, request)}}}
    a, b = (PilotProcess(tmp_path / f"p{i}", config=config, ready_timeout=90) for i in range(2))
    try:
        a.start()
        b.start()
        r = httpx.post(
            f"{a.api_url}/v1/tokens",
            json={"namespace": "default", "service_account": "web"},
            headers=a.admin_headers(),
            timeout=10,
        )
        assert r.status_code == 201, r.text
        token, jti = r.json()["token"], r.json()["jti"]
        old_root = _issue(b, token)

        def rotate(step: str) -> None:
            done = httpx.post(
                f"{a.api_url}/v1/ca/root-rotation", json={"step": step}, headers=a.admin_headers(), timeout=10
            )
            assert done.status_code == 200, done.text

        rotate("prepare")
        wait_until(
            lambda: httpx.get(f"{b.api_url}/v1/ca/roots", timeout=5).text.count("BEGIN CERTIFICATE") == 2,
            BOUND_S,
            what="B trusting the next root beside the current one",
        )
        rotate("activate")
        started = time.monotonic()
        new_root = wait_until(
            lambda: (root := _issue(b, token)) != old_root and root, BOUND_S, what="B signing with the new root"
        )
        took = time.monotonic() - started
        assert took < BOUND_S and "sofamesh root CA" in new_root.subject.rfc4514_string()
        assert _issue(a, token) == new_root  # the root A's step made, not one of B's own
        # revoke through A: B refuses the token while it runs
        assert httpx.delete(f"{a.api_url}/v1/tokens/{jti}", headers=a.admin_headers(), timeout=10).status_code == 200
        refusal = wait_until(lambda: _refused(b, token), BOUND_S, what="B refusing the revoked token")
        assert f"the token {jti} has been revoked" in refusal
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_revocations_through_two_replicas_at_once_lose_none(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two replicas' token authorities (each with its own client of the store) revoking at the same
    moments, round after round: the stored list ends with every revocation, and each replica, once
    it re-reads the list (as its follower does), refuses every one of those tokens."""
    opts = _storage_options(kind, request)
    stores = [security_storage(kind, opts, tmp_path) for _ in range(2)]
    replicas = [TokenAuthority(s, "cluster.local") for s in stores]
    rounds = 15
    tokens = [[replicas[r].issue("ns", f"sa{r}-{i}", 3600) for i in range(rounds)] for r in range(2)]
    go = threading.Barrier(2)
    failures: list[BaseException] = []

    def revoke_all(r: int) -> None:
        try:
            for _token, grant in tokens[r]:
                go.wait(30)  # both replicas revoke each round's token at the same moment
                replicas[r].revoke(grant.jti, grant.expires_at)
        except BaseException as exc:  # reported below
            failures.append(exc)
            go.abort()

    threads = [threading.Thread(target=revoke_all, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    stored = json.loads(stores[0].read("revoked-tokens.json") or b"{}")
    wanted = {grant.jti for per in tokens for _token, grant in per}
    assert wanted <= set(stored), f"lost {len(wanted - set(stored))} of {len(wanted)} revocations"
    for replica in replicas:
        replica.reload()
        for per in tokens:
            for token, _grant in per:
                with pytest.raises(TokenError, match="has been revoked"):
                    replica.verify(token)
    for s in stores:
        close = getattr(s, "close", None)
        if close is not None:
            close()


def _ads_over_tls(port: int, roots_pem: str, tmp: Path) -> int:
    """A TLS xDS client trusting ``roots_pem`` only: the clusters of its first CDS answer (raises when
    the port's certificate does not chain to those roots)."""
    roots = tmp / f"roots-{time.monotonic_ns()}.pem"
    roots.write_text(roots_pem)

    async def ask() -> int:
        ch = pilot_channel(f"127.0.0.1:{port}", PilotTlsConfig(ca=str(roots)))
        try:
            call = ch.stream_stream(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )()
            await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="tls-client"), type_url=_CDS))
            answer = await asyncio.wait_for(call.read(), 10)
            call.cancel()
            return len(answer.resources)
        finally:
            await ch.close(None)

    return asyncio.run(ask())


_CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_two_replicas_stepping_a_rotation_at_once_take_each_step_once_and_both_tls_ports_follow(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Each step of a root rotation asked of both replicas at the same moment: exactly one of them
    takes it (the other is told the rotation is already past it), both end with one root; and the
    TLS xDS port of each replica serves a certificate from the new root, which a TLS xDS client
    trusting only the new root accepts."""
    opts = _storage_options(kind, request)
    pilots = []
    for i in range(2):
        tls = {"address": f"127.0.0.1:{free_port()}", "hostnames": ["pilot.mesh.test"], "ttl_s": 3600}
        config = {"ca": {"storage": {"type": kind, "options": opts}}, "xds_tls": tls}
        pilots.append(PilotProcess(tmp_path / f"p{i}", config=config, ready_timeout=90))
    ports = [int(p.config["xds_tls"]["address"].rsplit(":", 1)[1]) for p in pilots]  # type: ignore[index]
    try:
        for p in pilots:
            p.start()
        old_roots = httpx.get(f"{pilots[1].api_url}/v1/ca/roots", timeout=5).text
        assert old_roots.count("BEGIN CERTIFICATE") == 1
        assert _ads_over_tls(ports[1], old_roots, tmp_path) >= 0
        for step in ("prepare", "activate", "finish"):
            go = threading.Barrier(2)
            answers: list[httpx.Response] = []

            def take(
                p: PilotProcess, step: str = step, go: threading.Barrier = go, answers: list[httpx.Response] = answers
            ) -> None:
                go.wait(30)
                answers.append(
                    httpx.post(
                        f"{p.api_url}/v1/ca/root-rotation", json={"step": step}, headers=p.admin_headers(), timeout=30
                    )
                )

            threads = [threading.Thread(target=take, args=(p,)) for p in pilots]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            codes = sorted(r.status_code for r in answers)
            assert codes == [200, 400], [(r.status_code, r.text) for r in answers]
            refusal = next(r for r in answers if r.status_code == 400).text
            assert f"cannot {step}: the rotation is at" in refusal
            want = {"prepare": 2, "activate": 2, "finish": 1}[step]
            for p in pilots:
                wait_until(
                    lambda p=p, want=want: (
                        httpx.get(f"{p.api_url}/v1/ca/roots", timeout=5).text.count("BEGIN CERTIFICATE") == want
                    ),
                    BOUND_S,
                    what=f"{want} roots after {step}",
                )
        new_roots = httpx.get(f"{pilots[0].api_url}/v1/ca/roots", timeout=5).text
        assert httpx.get(f"{pilots[1].api_url}/v1/ca/roots", timeout=5).text == new_roots != old_roots
        cas = [p.get("/debug/ca")["ca"] for p in pilots]
        assert cas[0]["signer"] == cas[1]["signer"] and cas[0]["root_rotation"] == cas[1]["root_rotation"] == "none"
        # each TLS xDS port now chains to the new root (the replica that did not take activate too)
        for port in ports:
            wait_until(
                lambda port=port: _ads_over_tls(port, new_roots, tmp_path) >= 0,
                BOUND_S,
                what=f"the TLS xDS port {port} serving a certificate from the new root",
            )
        with pytest.raises(grpc.aio.AioRpcError):
            _ads_over_tls(ports[1], old_roots, tmp_path)  # and no longer one from the old root
    finally:
        for p in pilots:
            p.stop()
