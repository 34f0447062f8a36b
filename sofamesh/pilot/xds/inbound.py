"""Istio's inbound path for sofamesh sidecars: a listener per port of the workload's instances,
taking mTLS from other sidecars and forwarding plaintext to the local app on 127.0.0.1, with the
workload's security policy as its filters.

Which instances are a node's (its workload): node metadata ``sofamesh.instances`` (instance ids,
a list or comma-separated), else those whose address is in ``INSTANCE_IPS`` (Istio's key). Only a
proxy holding a certificate (``sofamesh.mtls: true``) gets them. An Envoy gets its HTTP, gRPC and
Triple ports, with Envoy's RBAC filters (:mod:`sofamesh.pilot.xds.envoy_rbac`) instead of the
sidecar's filters, and RequestAuthentication as Envoy's JWT filter (:mod:`sofamesh.pilot.xds.envoy_jwt`;
a ``jwksUri``'s keys fetched by Pilot and inlined).

For each (address, port) of those instances:
- listener ``inbound|PORT|ADDRESS`` bound to the instance's own address and port: what consumers,
  and their sidecars, dial (the app listens on 127.0.0.1, as with Istio's Sidecar ingress
  ``bind`` / ``defaultEndpoint``). Its TLS follows PeerAuthentication: STRICT one TLS chain with
  client certificates required; PERMISSIVE Istio's pair of chains (``tls`` and ``raw_buffer``);
  DISABLE plaintext. Its filters: ``authn.mtls``, ``authn.jwt`` (RequestAuthentication),
  ``authz.rbac`` (AuthorizationPolicy), as ``sofamesh.config.filter.v1.Filter`` typed structs.
  HTTP, gRPC and Triple get an HTTP connection manager; Bolt, Dubbo and plugin protocols
  ``rpc_proxy`` with one catch-all route.
- cluster ``inbound|PORT|ADDRESS``: STATIC ``127.0.0.1:APP_PORT`` (the instance's port, or its
  label ``sofamesh.io/app-port``), HTTP/2 for gRPC and Triple.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import duration_pb2, struct_pb2
from xds.type.v3 import typed_struct_pb2

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.policy.hosts import NAMESPACE_METADATA
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE
from sofamesh.pilot.sidecars import INSTANCE_IPS_KEY, INSTANCES_KEY, names
from sofamesh.pilot.xds.auto_mtls import downstream_socket, holds_certificate
from sofamesh.pilot.xds.generator import CLUSTER, LISTENER, NodeInfo, XdsResource
from sofamesh.pilot.xds.generators import (
    DEFAULT_TRUST_DOMAIN,
    H2_PROTOCOLS,
    HTTP_PROTOCOLS,
    PolicyAware,
    _pack,
    _router_filter,
    websocket_upgrade,
)
from sofamesh.pilot.xds.rpc import RPC_PROXY_FILTER, RPC_PROXY_TYPE_URL
from sofamesh.pilot.xds.security_filters import security_http_filters
from sofamesh.pilot.xds.workload_security import Workload, inbound_filters, jwt_config, mtls_mode, rbac_config

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
    from sofamesh.pilot.security.jwks import JwksResolver
    from sofamesh.pilot.xds.generator import XdsGenerator

log = logging.getLogger("sofamesh.pilot.xds")

APP_PORT_LABEL = "sofamesh.io/app-port"
_HCM = "envoy.filters.network.http_connection_manager"
_H2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def _sofamesh(node: NodeInfo) -> bool:
    return node.user_agent.startswith("sofamesh")


def _node_scope(node: NodeInfo) -> Hashable:
    if not holds_certificate(node):
        return None
    meta = node.metadata
    raw = meta.get("LABELS")
    labels: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    return (names(meta.get(INSTANCES_KEY)), names(meta.get(INSTANCE_IPS_KEY)),
            tuple(sorted((str(k), str(v)) for k, v in labels.items())), str(meta.get("NAMESPACE", "")),
            _sofamesh(node))


def workload_instances(mesh: MeshModel, node: NodeInfo) -> list[tuple[Service, ServiceInstance]]:
    """The instances a node stands in front of (see the module docstring)."""
    ids = set(names(node.metadata.get(INSTANCES_KEY)))
    ips = set(names(node.metadata.get(INSTANCE_IPS_KEY))) if not ids else set()
    if not ids and not ips:
        return []
    out = []
    for name, service in sorted(mesh.services().items()):
        for inst in mesh.instances(name):
            if inst.id in ids or inst.address in ips:
                out.append((service, inst))
    return out


def _address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


class _Inbound(PolicyAware):
    """Shared by the LDS and CDS halves: the node's workload, port by port."""

    def scope(self, node: NodeInfo) -> Hashable:
        return _node_scope(node)

    def ports(self, mesh: MeshModel, node: NodeInfo) -> list[tuple[str, int, Service, list[ServiceInstance]]]:
        """(address, port, the service whose protocol it speaks, the instances on it)."""
        if _node_scope(node) is None:
            return []
        by: dict[tuple[str, int], tuple[Service, list[ServiceInstance]]] = {}
        for service, inst in workload_instances(mesh, node):
            if not _sofamesh(node) and service.protocol not in HTTP_PROTOCOLS:
                continue  # Envoy: HTTP, gRPC and Triple ports (it has no rpc_proxy)
            key = (inst.address, inst.port)
            have = by.get(key)
            if have is None:
                by[key] = (service, [inst])
            elif have[0].protocol == service.protocol:
                have[1].append(inst)
            else:
                log.warning("inbound %s:%d: %s speaks %s but %s already took the port with %s; skipped",
                            inst.address, inst.port, service.name, service.protocol, have[0].name, have[0].protocol)
        return [(a, p, svc, insts) for (a, p), (svc, insts) in sorted(by.items())]


def _name(address: str, port: int) -> str:
    return f"inbound|{port}|{address}"


class InboundClusterGenerator(_Inbound):
    """CDS: ``inbound|PORT|ADDRESS``, the local app."""

    type_url = CLUSTER

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        out = []
        for address, port, service, insts in self.ports(mesh, node):
            try:
                app_port = int(insts[0].labels.get(APP_PORT_LABEL, port))
            except ValueError:
                app_port = port
            name = _name(address, port)
            c = cluster_pb2.Cluster(
                name=name, type=cluster_pb2.Cluster.STATIC, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
                connect_timeout=duration_pb2.Duration(seconds=1),
                load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
                    endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=_address("127.0.0.1", app_port)))])]))
            if service.protocol in H2_PROTOCOLS:
                opts = http_protocol_options_pb2.HttpProtocolOptions(
                    explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                        http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
                c.typed_extension_protocol_options[_H2_OPTIONS].CopyFrom(_pack(opts))
            out.append(XdsResource(name, c))
        return out


class InboundListenerGenerator(_Inbound):
    """LDS: ``inbound|PORT|ADDRESS`` with the workload's TLS mode and security filters."""

    type_url = LISTENER
    jwks: JwksResolver | None = None

    def use_jwks(self, jwks: JwksResolver) -> None:
        """Pilot's fetcher of ``jwksUri`` keys, inlined for Envoy sidecars as istiod does."""
        self.jwks = jwks

    def workload(self, node: NodeInfo, service: Service, insts: list[ServiceInstance],
                 services: frozenset[str]) -> Workload:
        ns = str(node.metadata.get("NAMESPACE") or service.metadata.get(NAMESPACE_METADATA, DEFAULT_NAMESPACE))
        labels: dict[str, str] = {}
        for inst in insts:
            labels.update(inst.labels)
        node_labels = node.metadata.get("LABELS")
        if isinstance(node_labels, Mapping):
            labels.update({str(k): str(v) for k, v in node_labels.items()})
        return Workload(ns, labels, services)

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        ports = self.ports(mesh, node)
        if not ports:
            return []
        policy = self.policy
        model = policy.policy if policy is not None else None
        pas = model.resources("PeerAuthentication") if model is not None else []
        aps = model.resources("AuthorizationPolicy") if model is not None else []
        ras = model.resources("RequestAuthentication") if model is not None else []
        trust_domain = policy.trust_domain if policy is not None else DEFAULT_TRUST_DOMAIN
        services = frozenset(inst.service for _a, _p, _s, insts in ports for inst in insts)
        out = []
        for address, port, service, insts in ports:
            w = self.workload(node, service, insts, services)
            mode = mtls_mode(pas, w, port)
            rbac = rbac_config(aps, w, port)
            jwt = jwt_config(ras, w)
            filters = inbound_filters(mode, jwt, rbac, trust_domain)
            name = _name(address, port)
            # Envoy: its own JWT and RBAC filters; mTLS is the TLS chain's
            jwks_for = self.jwks.keys if self.jwks is not None else None
            http_filters = [*security_http_filters(_sofamesh(node), filters, jwt, rbac, jwks_for), _router_filter()]
            if service.protocol in HTTP_PROTOCOLS:
                hcm = hcm_pb2.HttpConnectionManager(
                    stat_prefix=name.replace("|", "_"), codec_type=hcm_pb2.HttpConnectionManager.AUTO,
                    route_config=route_pb2.RouteConfiguration(name=name, virtual_hosts=[
                        route_components_pb2.VirtualHost(name="inbound", domains=["*"], routes=[
                            route_components_pb2.Route(
                                match=route_components_pb2.RouteMatch(prefix="/"),
                                route=route_components_pb2.RouteAction(
                                    cluster=name, timeout=duration_pb2.Duration(seconds=0)))])]),
                    http_filters=http_filters, upgrade_configs=[websocket_upgrade()])
                network = listener_components_pb2.Filter(name=_HCM, typed_config=_pack(hcm))
            else:
                value = struct_pb2.Struct()
                value.update({"protocol": service.protocol, "stat_prefix": name.replace("|", "_"),
                              "filters": filters,
                              "routes": [{"name": "inbound", "match": {}, "cluster": name, "timeout_ms": 0}]})
                network = listener_components_pb2.Filter(name=RPC_PROXY_FILTER, typed_config=_pack(
                    typed_struct_pb2.TypedStruct(type_url=RPC_PROXY_TYPE_URL, value=value)))
            listener = listener_pb2.Listener(name=name, address=_address(address, port))
            if mode == "DISABLE":
                listener.filter_chains.append(listener_components_pb2.FilterChain(filters=[network]))
            else:
                listener.filter_chains.append(listener_components_pb2.FilterChain(
                    filter_chain_match=listener_components_pb2.FilterChainMatch(transport_protocol="tls"),
                    filters=[network], transport_socket=downstream_socket()))
                if mode == "PERMISSIVE":
                    listener.filter_chains.append(listener_components_pb2.FilterChain(
                        filter_chain_match=listener_components_pb2.FilterChainMatch(transport_protocol="raw_buffer"),
                        filters=[network]))
                listener.listener_filters.append(listener_components_pb2.ListenerFilter(
                    name=_TLS_INSPECTOR, typed_config=_pack(tls_inspector_pb2.TlsInspector())))
            out.append(XdsResource(name, listener))
        return out


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    catalog.add("lds.inbound", InboundListenerGenerator())
    catalog.add("cds.inbound", InboundClusterGenerator())


__all__ = ["APP_PORT_LABEL", "INSTANCES_KEY", "INSTANCE_IPS_KEY", "InboundClusterGenerator",
           "InboundListenerGenerator", "workload_instances"]
