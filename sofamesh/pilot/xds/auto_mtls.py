"""Istio's auto mTLS: an outbound cluster whose every instance runs a sidecar (Istio's endpoint
label ``security.istio.io/tlsMode: istio``, given at registration or learned from the sidecars
that connect: :mod:`sofamesh.pilot.sidecars`) originates mTLS with the SDS secrets ``default`` /
``ROOTCA`` and accepts only the destination's SPIFFE identities (a URI SAN matcher). A service
only some of whose instances run one gets Istio's per-endpoint choice instead: the cluster's
``transport_socket_matches`` (``tlsMode-istio``: mTLS to endpoints whose EDS metadata
``envoy.transport_socket_match`` says ``tlsMode: istio``; ``tlsMode-disabled``: plaintext to the
rest), and EDS carries that metadata for every meshed endpoint. Sent only to
proxies that hold a workload certificate (node metadata ``sofamesh.mtls: true``, which a sofamesh
sidecar with an agent sends by itself). A DestinationRule that sets ``tls`` turns it off for its
host, and so does a PeerAuthentication that DISABLEs mTLS on the destination's port, as in Istio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from sofamesh.pilot.policy.hosts import NAMESPACE_METADATA
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE
from sofamesh.pilot.sidecars import MTLS_METADATA  # the sidecar's xDS client sends it (core/xds/client.py)
from sofamesh.pilot.xds.workload_security import TLS_MODE_LABEL, Workload, identities, mtls_mode

if TYPE_CHECKING:
    from sofamesh.pilot.model import Service, ServiceInstance
    from sofamesh.pilot.policy.resource import Resource
    from sofamesh.pilot.xds.generator import NodeInfo

SDS_CLUSTER = "sds-grpc"  # Istio's name for the agent's SDS socket in Envoy's bootstrap
_TLS = "envoy.transport_sockets.tls"
_URI = common_pb2.SubjectAltNameMatcher.URI


def holds_certificate(node: NodeInfo) -> bool:
    return node.metadata.get(MTLS_METADATA) is True


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    source = config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC, transport_api_version=config_source_pb2.V3,
            grpc_services=[grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))]),
        resource_api_version=config_source_pb2.V3)
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def common_context(sans: Iterable[str] = ()) -> tls_pb2.CommonTlsContext:
    """The workload certificate (SDS ``default``) and trust bundle (SDS ``ROOTCA``), and the URI
    SANs a peer must present (``prefix*`` for a prefix)."""
    c = tls_pb2.CommonTlsContext(tls_certificate_sds_secret_configs=[_sds("default")])
    cvc = c.combined_validation_context
    cvc.validation_context_sds_secret_config.CopyFrom(_sds("ROOTCA"))
    cvc.default_validation_context.SetInParent()  # Envoy requires it, even empty
    for san in sans:
        m = cvc.default_validation_context.match_typed_subject_alt_names.add(san_type=_URI)
        m.matcher.CopyFrom(string_pb2.StringMatcher(prefix=san[:-1]) if san.endswith("*")
                           else string_pb2.StringMatcher(exact=san))
    return c


def upstream_socket(sans: Iterable[str]) -> base_pb2.TransportSocket:
    ts = base_pb2.TransportSocket(name=_TLS)
    ts.typed_config.Pack(tls_pb2.UpstreamTlsContext(common_tls_context=common_context(sans)))
    return ts


def downstream_socket() -> base_pb2.TransportSocket:
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=common_context())
    ctx.require_client_certificate.value = True
    ts = base_pb2.TransportSocket(name=_TLS)
    ts.typed_config.Pack(ctx)
    return ts


SOCKET_MATCH_METADATA = "envoy.transport_socket_match"  # Envoy's filter_metadata key for the choice


def is_meshed(instance: ServiceInstance) -> bool:
    return instance.labels.get(TLS_MODE_LABEL) == "istio"


def socket_matches(sans: Iterable[str]) -> list[cluster_pb2.Cluster.TransportSocketMatch]:
    """Istio's two matches: mTLS to ``tlsMode: istio`` endpoints, plaintext to the others."""
    istio = cluster_pb2.Cluster.TransportSocketMatch(name="tlsMode-istio", transport_socket=upstream_socket(sans))
    istio.match.update({"tlsMode": "istio"})
    plain = base_pb2.TransportSocket(name="envoy.transport_sockets.raw_buffer")
    plain.typed_config.Pack(raw_buffer_pb2.RawBuffer())
    disabled = cluster_pb2.Cluster.TransportSocketMatch(name="tlsMode-disabled", transport_socket=plain)
    disabled.match.SetInParent()
    return [istio, disabled]


def mark_meshed(lb: endpoint_components_pb2.LbEndpoint) -> None:
    """EDS metadata of a meshed endpoint: what ``tlsMode-istio`` matches."""
    lb.metadata.filter_metadata[SOCKET_MATCH_METADATA].update({"tlsMode": "istio"})


def meshed(instances: Iterable[ServiceInstance]) -> bool:
    """Every instance runs a sidecar (and there is at least one)."""
    seen = False
    for i in instances:
        if i.labels.get(TLS_MODE_LABEL) != "istio":
            return False
        seen = True
    return seen


def auto_mtls_sans(service: Service, instances: tuple[ServiceInstance, ...], trust_domain: str,
                   destination_rule: Mapping[str, Any] | None,
                   peer_authentications: Iterable[Resource]) -> list[str] | None:
    """The identities a client checks on ``service``'s meshed instances, or ``None`` when its
    clusters stay plaintext (no instance is meshed, a DestinationRule sets ``tls``, or mTLS is
    DISABLEd there). Whether every instance is meshed (one transport socket) or some (socket
    matches) is :func:`meshed`'s answer."""
    instances = tuple(i for i in instances if is_meshed(i))
    if not instances:
        return None
    tp = (destination_rule or {}).get("trafficPolicy") or {}
    if tp.get("tls") or any(isinstance(p, Mapping) and p.get("tls") for p in tp.get("portLevelSettings") or []):
        return None
    namespace = service.metadata.get(NAMESPACE_METADATA, DEFAULT_NAMESPACE)
    pas = list(peer_authentications)
    if pas:
        for inst in instances:
            w = Workload(inst.labels.get("sofamesh.io/namespace") or namespace, inst.labels, frozenset({service.name}))
            if mtls_mode(pas, w, inst.port) == "DISABLE":
                return None
    return identities([i.labels for i in instances], trust_domain, namespace)


def destination_identities(service: Service, instances: tuple[ServiceInstance, ...], trust_domain: str) -> list[str]:
    """The identities a DestinationRule's ``ISTIO_MUTUAL`` naming no ``subjectAltNames`` checks on
    ``service``: its instances' service accounts (istiod's choice), whether or not they are meshed."""
    namespace = service.metadata.get(NAMESPACE_METADATA, DEFAULT_NAMESPACE)
    return identities([i.labels for i in instances], trust_domain, namespace)


__all__ = ["MTLS_METADATA", "SDS_CLUSTER", "SOCKET_MATCH_METADATA", "auto_mtls_sans", "common_context",
           "destination_identities", "downstream_socket", "holds_certificate", "is_meshed", "mark_meshed", "meshed",
           "socket_matches", "upstream_socket"]
