"""The agent's settings (where its identity comes from) and the SDS server's three RPCs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from sofamesh.core.config.model import AgentConfig, XdsConfig
from sofamesh.core.errors import ConfigError
from sofamesh.core.net.secrets import CertificateSecret, SecretStore, TrustSecret
from sofamesh.core.security.agent import settings_from_config
from sofamesh.core.security.sds import SECRET_TYPE, SdsServer
from sofamesh.core.security.spiffe import SpiffeId


def _token(sub: str) -> str:
    body = base64.urlsafe_b64encode(json.dumps({"sub": sub, "exp": 2**31}).encode()).decode().rstrip("=")
    return f"e30.{body}.sig"


def test_the_identity_comes_from_flags_then_node_metadata_then_the_token() -> None:
    token = _token("spiffe://corp.example/ns/shop/sa/cart")
    xds = XdsConfig(address="127.0.0.1:15010", node_id="n", metadata={"NAMESPACE": "pay", "SERVICE_ACCOUNT": "api"})
    flags = settings_from_config(AgentConfig(token=token, namespace="a", service_account="b"), xds)
    assert flags.identity == SpiffeId("corp.example", "a", "b") and flags.ca_address == "127.0.0.1:15010"
    meta = settings_from_config(AgentConfig(token=token), xds)
    assert meta.identity == SpiffeId("corp.example", "pay", "api")
    assert settings_from_config(AgentConfig(token=token, ca_address="10.0.0.1:15012"), None).identity is None
    with pytest.raises(ConfigError, match=r"agent\.ca_address: required without an xds section"):
        settings_from_config(AgentConfig(token=token), None)
    with pytest.raises(ValueError, match="give both namespace and service_account"):
        AgentConfig(token=token, namespace="a")


def test_sds_serves_default_and_rootca_by_stream_delta_and_fetch_and_pushes_a_rotation(tmp_path: Path) -> None:
    store = SecretStore()
    store.set("ROOTCA", TrustSecret(b"ROOT"))

    async def go() -> None:
        sds = SdsServer(store)
        path = str(tmp_path / "sds.sock")
        await sds.start(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it hands out a private key
        try:
            async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
                svc = "/envoy.service.secret.v3.SecretDiscoveryService/"
                fetch = ch.unary_unary(svc + "FetchSecrets", request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=discovery_pb2.DiscoveryResponse.FromString)
                got = await fetch(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=["ROOTCA"]),
                                  timeout=5)
                s = secret_pb2.Secret()
                got.resources[0].Unpack(s)
                assert s.validation_context.trusted_ca.inline_bytes == b"ROOT"

                stream = ch.stream_stream(svc + "StreamSecrets", request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
                await stream.write(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=["default"]))
                store.set("default", CertificateSecret(b"CHAIN1", b"KEY1"))  # arrives after the request
                first = await asyncio.wait_for(stream.read(), 5)
                first.resources[0].Unpack(s)
                assert (s.name, s.tls_certificate.certificate_chain.inline_bytes) == ("default", b"CHAIN1")
                await stream.write(discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=["default"],
                                                                  response_nonce=first.nonce,
                                                                  version_info=first.version_info))
                store.set("default", CertificateSecret(b"CHAIN2", b"KEY2"))
                second = await asyncio.wait_for(stream.read(), 5)
                second.resources[0].Unpack(s)
                assert s.tls_certificate.private_key.inline_bytes == b"KEY2"
                assert second.version_info != first.version_info
                stream.cancel()

                delta = ch.stream_stream(svc + "DeltaSecrets", request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)()
                await delta.write(discovery_pb2.DeltaDiscoveryRequest(
                    type_url=SECRET_TYPE, resource_names_subscribe=["default", "ROOTCA"]))
                d = await asyncio.wait_for(delta.read(), 5)
                assert sorted(r.name for r in d.resources) == ["ROOTCA", "default"]
                delta.cancel()
        finally:
            await sds.stop()
        assert not Path(path).exists()

    asyncio.run(asyncio.wait_for(go(), 20))
