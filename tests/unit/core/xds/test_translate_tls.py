"""TLS transport sockets over xDS: SDS secrets default / ROOTCA from this process's agent, or files."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from sofamesh.core.config.loader import from_mapping
from sofamesh.core.errors import ConfigError
from sofamesh.core.net.secrets import SecretStore
from sofamesh.core.net.tls import TlsSource
from sofamesh.core.xds.translate import translate_cluster, translate_listener
from tests.integration.xds.tiny_ads import http_listener


def _common(cert: str = "default", ca: str = "ROOTCA", sans: tuple[str, ...] = (),
            agent: bool = False) -> tls_pb2.CommonTlsContext:
    c = tls_pb2.CommonTlsContext(alpn_protocols=["h2", "http/1.1"])
    source = config_source_pb2.ConfigSource(path_config_source={"path": "/sds"}) if agent else \
        config_source_pb2.ConfigSource(ads={})
    c.tls_certificate_sds_secret_configs.add(name=cert, sds_config=source)
    c.combined_validation_context.validation_context_sds_secret_config.name = ca
    for san in sans:
        c.combined_validation_context.default_validation_context.match_subject_alt_names.add(exact=san)
    return c


def _socket(ctx: Any) -> base_pb2.TransportSocket:
    ts = base_pb2.TransportSocket(name="envoy.transport_sockets.tls")
    ts.typed_config.Pack(ctx)
    return ts


def _listener(ctx: Any) -> Any:
    lst = http_listener("in", "127.0.0.1:15006", rds="r")
    lst.filter_chains[0].transport_socket.CopyFrom(_socket(ctx))
    return lst


def test_a_listener_naming_sds_default_and_rootca_gets_the_agents_secrets_and_requires_client_certs() -> None:
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=_common())
    ctx.require_client_certificate.value = True
    out = translate_listener(_listener(ctx))
    assert out is not None
    assert out.config["tls"] == {"secret": "default", "ca_secret": "ROOTCA", "require_client_cert": True,
                                 "alpn": ["h2", "http/1.1"]}


def test_a_cluster_with_an_upstream_tls_context_originates_mtls_with_the_agents_secrets() -> None:
    c = cluster_pb2.Cluster(name="outbound|80||web", type=cluster_pb2.Cluster.EDS)
    c.transport_socket.CopyFrom(_socket(tls_pb2.UpstreamTlsContext(common_tls_context=_common(), sni="web")))
    assert translate_cluster(c).config["tls"] == {"secret": "default", "ca_secret": "ROOTCA", "sni": "web",
                                                  "alpn": ["h2", "http/1.1"]}


def test_a_clusters_uri_san_matchers_become_the_identities_its_upstreams_must_present() -> None:
    common = _common(sans=("spiffe://cluster.local/ns/a/sa/b",))
    typed = common.combined_validation_context.default_validation_context.match_typed_subject_alt_names.add()
    typed.san_type = typed.URI
    typed.matcher.prefix = "spiffe://cluster.local/ns/b/"
    c = cluster_pb2.Cluster(name="outbound|80||web", type=cluster_pb2.Cluster.EDS)
    c.transport_socket.CopyFrom(_socket(tls_pb2.UpstreamTlsContext(common_tls_context=common)))
    assert translate_cluster(c).config["tls"]["match_sans"] == ["spiffe://cluster.local/ns/b/*",
                                                                "spiffe://cluster.local/ns/a/sa/b"]
    typed.san_type = typed.DNS  # a DNS SAN (a DestinationRule's subjectAltNames) is checked too
    typed.matcher.exact = "web.example"
    c.transport_socket.CopyFrom(_socket(tls_pb2.UpstreamTlsContext(common_tls_context=common)))
    assert translate_cluster(c).config["tls"]["match_sans"] == ["web.example", "spiffe://cluster.local/ns/a/sa/b"]
    typed.san_type = typed.EMAIL
    c.transport_socket.CopyFrom(_socket(tls_pb2.UpstreamTlsContext(common_tls_context=common)))
    with pytest.raises(ConfigError, match="san_type: only URI"):
        translate_cluster(c)


def test_file_certificates_in_a_tls_context_become_file_paths() -> None:
    c = tls_pb2.CommonTlsContext()
    c.tls_certificates.add(certificate_chain=base_pb2.DataSource(filename="/c.pem"),
                           private_key=base_pb2.DataSource(filename="/k.pem"))
    c.validation_context.trusted_ca.filename = "/ca.pem"
    out = translate_listener(_listener(tls_pb2.DownstreamTlsContext(common_tls_context=c)))
    assert out is not None and out.config["tls"] == {"cert": "/c.pem", "key": "/k.pem", "ca": "/ca.pem"}


@pytest.mark.parametrize(("ctx", "message"), [
    (tls_pb2.DownstreamTlsContext(common_tls_context=_common(cert="spiffe-cert", agent=True)),
     "Listener 'in': filter_chains[0].transport_socket.typed_config.common_tls_context."
     "tls_certificate_sds_secret_configs[0].name: SDS secret 'spiffe-cert' is not served here"),
    (tls_pb2.DownstreamTlsContext(common_tls_context=_common(sans=("spiffe://cluster.local/ns/a/sa/b",))),
     "default_validation_context.match_subject_alt_names: a listener does not check its clients' SANs in the "
     "TLS context; authz.rbac principals do"),
    (secret_pb2.Secret(name="x"), "transport socket 'envoy.transport_sockets.tls' "
                                  "(type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret) is not "
                                  "supported"),
])
def test_what_this_proxy_cannot_honour_in_a_tls_context_is_nacked_naming_the_field(ctx: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        translate_listener(_listener(ctx))
    assert message in str(info.value)


def test_a_tls_context_naming_a_secret_this_process_does_not_have_is_refused_saying_where_it_comes_from() -> None:
    cfg = from_mapping({"listeners": [{"name": "in", "address": "127.0.0.1:0", "tls": {
        "secret": "default", "ca_secret": "ROOTCA", "require_client_cert": True}, "routes": [
        {"cluster": "c"}]}], "clusters": [{"name": "c", "endpoints": ["127.0.0.1:1"]}]})
    tls = cfg.listeners[0].tls
    assert tls is not None
    with pytest.raises(ConfigError) as info:
        TlsSource(tls, server=True, path="listeners[0].tls", secrets=SecretStore())
    assert str(info.value).startswith("listeners[0].tls.secret: secret 'default' is not available in this process "
                                      "(have: none); a sidecar gets 'default' and 'ROOTCA' from its agent")
