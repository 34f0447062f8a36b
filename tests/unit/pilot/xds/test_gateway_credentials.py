"""Gateway ``credentialName`` -> SDS over ADS: the Secrets of the gateway's namespace become Envoy
``Secret`` resources for gateway nodes only, and the servers naming them reference them by SDS; a
server naming a Secret that is not there is left out while the others serve."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from sofamesh.pilot.model import MeshModel
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.xds.gateway_credentials import GatewaySecretGenerator
from sofamesh.pilot.xds.gateways import GatewayListenerGenerator, GatewayRouteGenerator
from sofamesh.pilot.xds.generator import NodeInfo
from tests.unit.pilot.policy.test_credentials import pki as pki  # the certificates (a fixture)
from tests.unit.pilot.policy.test_credentials import secret_doc
from tests.unit.pilot.xds.test_gateways import GATEWAY_NODE, _generate, _setup, _tls

SIDECAR = NodeInfo("sidecar~127.0.0.1~web.default~default.svc.cluster.local", metadata={"NAMESPACE": "default"})
OTHER_NS = NodeInfo(
    "router~127.0.0.2~edge.shop~shop.svc.cluster.local",
    metadata={"LABELS": {"istio": "ingressgateway"}, "NAMESPACE": "shop"},
)
GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 8443, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: MUTUAL, credentialName: "kubernetes://b-cert"}
  - port: {number: 8443, name: https-c, protocol: HTTPS}
    hosts: [c.example.com]
    tls: {mode: SIMPLE, credentialName: missing}
"""


def _secrets(pki: Any) -> str:
    ca, a, b = pki
    docs = [
        secret_doc("a-cert", a),
        secret_doc("b-cert", b),
        secret_doc("b-cert-cacert", ca=ca),
        secret_doc("a-cert", b, namespace="shop"),
    ]
    return "\n---\n".join(yaml.safe_dump(d) for d in docs)


def _setup_all(pki: Any, gateway: str = GATEWAY) -> tuple[MeshModel, AppliedPolicy]:
    return _setup(gateway, _secrets(pki))


def test_a_gateway_gets_the_secrets_of_its_namespace_by_istios_names_and_a_sidecar_gets_none(pki: Any) -> None:
    ca, a, b = pki
    mesh, policy = _setup_all(pki)
    got = _generate(GatewaySecretGenerator(), policy, mesh)
    assert sorted(got) == [
        "a-cert",
        "b-cert",
        "b-cert-cacert",
        "kubernetes://a-cert",
        "kubernetes://b-cert",
        "kubernetes://b-cert-cacert",
    ]
    cert = got["kubernetes://a-cert"].tls_certificate
    assert cert.certificate_chain.inline_bytes == Path(a.cert).read_bytes()
    assert cert.private_key.inline_bytes == Path(a.key).read_bytes()
    assert got["kubernetes://b-cert-cacert"].validation_context.trusted_ca.inline_bytes == Path(ca).read_bytes()
    gen = GatewaySecretGenerator()
    gen.use_policy(policy)
    assert not list(gen.generate(mesh, SIDECAR))
    assert all(not r.wildcard for r in gen.generate(mesh, GATEWAY_NODE))  # only the names a proxy asks for
    shop = _generate(GatewaySecretGenerator(), policy, mesh, OTHER_NS)
    assert sorted(shop) == ["a-cert", "kubernetes://a-cert"]  # the shop namespace's own a-cert
    assert shop["kubernetes://a-cert"].tls_certificate.certificate_chain.inline_bytes == Path(b.cert).read_bytes()


def test_servers_reference_their_credentials_over_ads_and_one_naming_no_secret_is_left_out(
    pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mesh, policy = _setup_all(pki)
    with caplog.at_level(logging.WARNING, logger="sofamesh.pilot.gateways"):
        got = _generate(GatewayListenerGenerator(), policy, mesh)
    https = got["127.0.0.1_8443"]
    assert [list(c.filter_chain_match.server_names) for c in https.filter_chains] == [
        ["a.example.com"],
        ["b.example.com"],
    ]
    a, b = (_tls(c) for c in https.filter_chains)
    [sds] = a.common_tls_context.tls_certificate_sds_secret_configs
    assert sds.name == "kubernetes://a-cert" and sds.sds_config.HasField("ads")
    assert not a.common_tls_context.tls_certificates and not a.require_client_certificate.value
    [sds] = b.common_tls_context.tls_certificate_sds_secret_configs
    assert sds.name == "kubernetes://b-cert"
    ca = b.common_tls_context.combined_validation_context.validation_context_sds_secret_config
    assert ca.name == "kubernetes://b-cert-cacert" and ca.sds_config.HasField("ads")
    assert b.require_client_certificate.value
    [warning] = [r.getMessage() for r in caplog.records]
    assert "spec.servers[2] (port 8443) is left out: credentialName 'missing': no Secret 'missing'" in warning
    routes = _generate(GatewayRouteGenerator(), policy, mesh)
    assert "https.8443" in routes


def test_mutual_without_a_client_ca_is_left_out_naming_what_is_missing(
    pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = GATEWAY.replace("kubernetes://b-cert", "a-cert")
    mesh, policy = _setup_all(pki, gateway)
    with caplog.at_level(logging.WARNING, logger="sofamesh.pilot.gateways"):
        got = _generate(GatewayListenerGenerator(), policy, mesh)
    assert [list(c.filter_chain_match.server_names) for c in got["127.0.0.1_8443"].filter_chains] == [["a.example.com"]]
    assert any(
        "MUTUAL needs a client CA: ca.crt in Secret 'a-cert' or a Secret a-cert-cacert" in r.getMessage()
        for r in caplog.records
    )


def test_the_sidecar_warms_a_listener_until_its_ads_secrets_arrive(pki: Any) -> None:
    from sofamesh.core.config.model import ProxyConfig
    from sofamesh.core.xds.secrets import SECRET_TYPE
    from sofamesh.core.xds.translate import LISTENER_TYPE, ROUTE_TYPE, Translated, assemble, translate

    mesh, policy = _setup_all(pki)
    listener = _generate(GatewayListenerGenerator(), policy, mesh)["127.0.0.1_8443"]
    state = Translated()
    tl = translate(LISTENER_TYPE, listener, ("http1",))
    assert tl.sds == {"kubernetes://a-cert", "kubernetes://b-cert", "kubernetes://b-cert-cacert"}
    state.listeners[listener.name] = tl
    for name, rc in _generate(GatewayRouteGenerator(), policy, mesh).items():
        state.routes[name] = translate(ROUTE_TYPE, rc, ("http1",))
    assert state.sds_names() == tl.sds
    assert assemble(ProxyConfig(), state, False).listeners == []  # warming
    for name, secret in _generate(GatewaySecretGenerator(), policy, mesh).items():
        if name in tl.sds:
            state.secrets[name] = translate(SECRET_TYPE, secret, ())
    [lc] = assemble(ProxyConfig(), state, False).listeners
    servers = lc.tls_servers
    assert [(s.server_names, s.tls.secret, s.tls.ca_secret, s.tls.require_client_cert) for s in servers] == [
        (["a.example.com"], "kubernetes://a-cert", None, False),
        (["b.example.com"], "kubernetes://b-cert", "kubernetes://b-cert-cacert", True),
    ]
    assert tls_pb2  # the listener's contexts are DownstreamTlsContexts (checked above)
