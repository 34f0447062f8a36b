"""Built-in xDS generators (the ``xds`` Pilot plugin): EDS clusters, endpoints, proxyless gRPC
``api_listener``\\ s, and Envoy's outbound HTTP listener with its route config.

Naming conventions (docs/pilot.md):
- cluster and ClusterLoadAssignment ``outbound|PORT|NAME`` for each port of each http/grpc/triple service;
- listener ``NAME`` (and ``NAME:PORT``) holding an ``api_listener`` for proxyless gRPC (target ``xds:///NAME``);
- listener ``outbound|PORT`` bound to ``ADDRESS:PORT`` from node metadata ``sofamesh.outbound_address``
  (default 127.0.0.1) and ``sofamesh.outbound_port`` (default 15001), its HCM reading route config
  ``outbound|PORT`` over ADS: one virtual host per service, domains ``NAME`` and ``NAME:*``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.model import Health, MeshModel, Service, ServiceInstance
from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT, LISTENER, ROUTE, NodeInfo, XdsResource

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.xds.generator import XdsGenerator

HTTP_PROTOCOLS = frozenset({"http", "grpc", "triple"})
H2_PROTOCOLS = frozenset({"grpc", "triple"})
PROXYLESS_PROTOCOLS = frozenset({"grpc", "triple"})
OUTBOUND_PORT_KEY = "sofamesh.outbound_port"
OUTBOUND_ADDRESS_KEY = "sofamesh.outbound_address"
DEFAULT_OUTBOUND_PORT = 15001
DEFAULT_OUTBOUND_ADDRESS = "127.0.0.1"
_ROUTER = "envoy.filters.http.router"
_HCM = "envoy.filters.network.http_connection_manager"
_H2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HEALTH = {Health.HEALTHY: health_check_pb2.HEALTHY, Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
           Health.DRAINING: health_check_pb2.DRAINING}


def cluster_name(service: Service, port: int) -> str:
    return f"outbound|{port}|{service.name}"


def _pack(message: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(message)
    return a


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def _router_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=_ROUTER, typed_config=_pack(router_pb2.Router()))


def _route_to(cluster: str) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=cluster, timeout=duration_pb2.Duration(seconds=0)),
    )


class _PerService:
    """Shared memo: resources of one service are rebuilt only when that service changed."""

    type_url: str
    protocols: frozenset[str] = HTTP_PROTOCOLS

    def __init__(self) -> None:
        self._memo: dict[str, tuple[int, list[XdsResource]]] = {}

    def scope(self, node: NodeInfo) -> Hashable:
        return None

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        out: list[XdsResource] = []
        memo: dict[str, tuple[int, list[XdsResource]]] = {}
        for name, service in mesh.services().items():
            if service.protocol not in self.protocols:
                continue
            index = mesh.service_index(name)
            hit = self._memo.get(name)
            if hit is not None and hit[0] == index:
                built = hit[1]
            else:
                built = self.build(service, mesh.instances(name))
            memo[name] = (index, built)
            out.extend(built)
        self._memo = memo
        return out

    def build(self, service: Service, instances: tuple[ServiceInstance, ...]) -> list[XdsResource]:
        raise NotImplementedError


class ClusterGenerator(_PerService):
    """CDS: one EDS cluster (over ADS) per port of each http/grpc/triple service."""

    type_url = CLUSTER

    def build(self, service: Service, instances: tuple[ServiceInstance, ...]) -> list[XdsResource]:
        out = []
        for port in service.ports:
            name = cluster_name(service, port)
            c = cluster_pb2.Cluster(
                name=name, type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
                connect_timeout=duration_pb2.Duration(seconds=1),
                eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name),
            )
            if service.protocol in H2_PROTOCOLS:
                opts = http_protocol_options_pb2.HttpProtocolOptions(
                    explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                        http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
                c.typed_extension_protocol_options[_H2_OPTIONS].CopyFrom(_pack(opts))
            out.append(XdsResource(name, c))
        return out


class EndpointGenerator(_PerService):
    """EDS: the instances of each cluster, grouped by locality; every locality has a weight."""

    type_url = ENDPOINT

    def build(self, service: Service, instances: tuple[ServiceInstance, ...]) -> list[XdsResource]:
        by_locality: dict[tuple[str, str, str], list[ServiceInstance]] = {}
        for inst in instances:
            by_locality.setdefault(inst.locality, []).append(inst)
        out = []
        for port in service.ports:
            name = cluster_name(service, port)
            cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
            for (region, zone, sub_zone), insts in sorted(by_locality.items()):
                cla.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(
                    locality=base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone),
                    load_balancing_weight=wrappers_pb2.UInt32Value(value=sum(i.weight for i in insts)),
                    lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                            socket_address=address_pb2.SocketAddress(address=i.address, port_value=i.port))),
                        health_status=_HEALTH[i.health],
                        load_balancing_weight=wrappers_pb2.UInt32Value(value=i.weight),
                    ) for i in insts],
                ))
            out.append(XdsResource(name, cla))
        return out


class ApiListenerGenerator(_PerService):
    """LDS for proxyless gRPC: listener ``NAME`` (and ``NAME:PORT``) with an ``api_listener``.

    These resources are sent only to nodes that name them, never on a wildcard subscription.
    """

    type_url = LISTENER
    protocols = PROXYLESS_PROTOCOLS

    def build(self, service: Service, instances: tuple[ServiceInstance, ...]) -> list[XdsResource]:
        names = [(service.name, service.port)] + [(f"{service.name}:{p}", p) for p in service.ports]
        out = []
        for listener_name, port in names:
            hcm = hcm_pb2.HttpConnectionManager(
                stat_prefix=listener_name,
                route_config=route_pb2.RouteConfiguration(name=listener_name, virtual_hosts=[
                    route_components_pb2.VirtualHost(name=service.name, domains=["*"],
                                                     routes=[_route_to(cluster_name(service, port))])]),
                http_filters=[_router_filter()],
            )
            listener = listener_pb2.Listener(name=listener_name,
                                             api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm)))
            out.append(XdsResource(listener_name, listener, wildcard=False))
        return out


def _outbound(node: NodeInfo) -> tuple[str, int]:
    meta = node.metadata
    address = meta.get(OUTBOUND_ADDRESS_KEY, DEFAULT_OUTBOUND_ADDRESS)
    try:
        port = int(meta.get(OUTBOUND_PORT_KEY, DEFAULT_OUTBOUND_PORT))
    except (TypeError, ValueError):
        port = DEFAULT_OUTBOUND_PORT
    return str(address), port


class OutboundListenerGenerator:
    """LDS for Envoy: ``outbound|PORT`` on the node's outbound address, HCM with RDS over ADS."""

    type_url = LISTENER

    def scope(self, node: NodeInfo) -> Hashable:
        return _outbound(node)

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        address, port = _outbound(node)
        name = f"outbound|{port}"
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix=f"outbound_{port}", codec_type=hcm_pb2.HttpConnectionManager.AUTO,
            rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=name),
            http_filters=[_router_filter()],
        )
        listener = listener_pb2.Listener(
            name=name,
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=address, port_value=port)),
            filter_chains=[listener_components_pb2.FilterChain(filters=[
                listener_components_pb2.Filter(name=_HCM, typed_config=_pack(hcm))])],
        )
        return [XdsResource(name, listener)]


class OutboundRouteGenerator:
    """RDS for Envoy: route config ``outbound|PORT``, one virtual host per http/grpc/triple service."""

    type_url = ROUTE

    def __init__(self) -> None:
        self._memo: tuple[int, list[route_components_pb2.VirtualHost]] | None = None

    def scope(self, node: NodeInfo) -> Hashable:
        return _outbound(node)[1]

    def _virtual_hosts(self, mesh: MeshModel) -> list[route_components_pb2.VirtualHost]:
        if self._memo is not None and self._memo[0] == mesh.index:
            return self._memo[1]
        hosts = []
        for name, service in mesh.services().items():
            if service.protocol not in HTTP_PROTOCOLS:
                continue
            hosts.append(route_components_pb2.VirtualHost(
                name=name, domains=[name, f"{name}:*"],
                routes=[_route_to(cluster_name(service, service.port))]))
            for port in service.ports[1:]:
                hosts.append(route_components_pb2.VirtualHost(
                    name=f"{name}:{port}", domains=[f"{name}:{port}"],
                    routes=[_route_to(cluster_name(service, port))]))
        self._memo = (mesh.index, hosts)
        return hosts

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        _address, port = _outbound(node)
        name = f"outbound|{port}"
        config = route_pb2.RouteConfiguration(name=name, virtual_hosts=self._virtual_hosts(mesh))
        return [XdsResource(name, config)]


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    catalog.add("cds.outbound", ClusterGenerator())
    catalog.add("eds.outbound", EndpointGenerator())
    catalog.add("lds.api_listener", ApiListenerGenerator())
    catalog.add("lds.outbound_http", OutboundListenerGenerator())
    catalog.add("rds.outbound_http", OutboundRouteGenerator())
