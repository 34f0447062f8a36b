"""Built-in xDS generators (the ``xds`` Pilot plugin): EDS clusters, endpoints, proxyless gRPC
``api_listener``\\ s, and Envoy's outbound HTTP listener with its route config.

Naming conventions (docs/pilot.md):
- cluster and ClusterLoadAssignment ``outbound|PORT|NAME`` for each port of each http/grpc/triple/tcp
  service (tcp ones are used by the outbound TCP listeners of :mod:`.tcp_routes`);
- listener ``NAME`` (and ``NAME:PORT``) holding an ``api_listener`` for proxyless gRPC (target ``xds:///NAME``);
- listener ``outbound|PORT`` bound to ``ADDRESS:PORT`` from node metadata ``sofamesh.outbound_address``
  (default 127.0.0.1) and ``sofamesh.outbound_port`` (default 15001), its HCM reading route config
  ``outbound|PORT`` over ADS: one virtual host per service, domains ``NAME`` and ``NAME:*``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from sofamesh.pilot.policy.applied import service_visible
from sofamesh.pilot.policy.hosts import selects, service_hosts
from sofamesh.pilot.xds.auto_mtls import (
    auto_mtls_sans,
    destination_identities,
    holds_certificate,
    is_meshed,
    mark_meshed,
    meshed,
    socket_matches,
    upstream_socket,
)
from sofamesh.pilot.xds.destination_rules import (
    apply_traffic_policy,
    cluster_tls,
    effective_policy,
    subset_cluster_name,
)
from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT, LISTENER, ROUTE, NodeInfo, XdsResource, is_gateway
from sofamesh.pilot.xds.locality import Group, failover_label_keys, groups_by_locality, locality_groups
from sofamesh.pilot.xds.locality import applies as locality_applies
from sofamesh.pilot.xds.virtual_services import Source, cors_http_filter, fault_http_filter, http_routes

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.policy.applied import AppliedPolicy, PolicySnapshot, ServicePolicy
    from sofamesh.pilot.xds.generator import XdsGenerator

DEFAULT_TRUST_DOMAIN = "cluster.local"
HTTP_PROTOCOLS = frozenset({"http", "grpc", "triple"})
CLUSTER_PROTOCOLS = HTTP_PROTOCOLS | {"tcp"}  # services with outbound clusters (tcp: :mod:`.tcp_routes`)
H2_PROTOCOLS = frozenset({"grpc", "triple"})
PROXYLESS_PROTOCOLS = frozenset({"grpc", "triple"})
OUTBOUND_PORT_KEY = "sofamesh.outbound_port"
OUTBOUND_ADDRESS_KEY = "sofamesh.outbound_address"
NAMESPACE_KEY = "NAMESPACE"  # node metadata: the proxy's namespace, as Istio's
DEFAULT_OUTBOUND_PORT = 15001
DEFAULT_OUTBOUND_ADDRESS = "127.0.0.1"
_ROUTER = "envoy.filters.http.router"
_HCM = "envoy.filters.network.http_connection_manager"
_H2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HEALTH = {Health.HEALTHY: health_check_pb2.HEALTHY, Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
           Health.DRAINING: health_check_pb2.DRAINING}


LB_METADATA = "envoy.lb"  # Envoy's filter_metadata key for what load balancing (subsets) matches on


def endpoint_labels(inst: ServiceInstance) -> dict[str, str]:
    """An endpoint's metadata under ``envoy.lb``: its labels, and its ``version`` when it has one
    (registries give it apart: Dubbo URLs, Eureka / Nacos / Consul metadata)."""
    labels = dict(inst.labels)
    if inst.version:
        labels.setdefault("version", inst.version)
    return labels


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


def websocket_upgrade() -> hcm_pb2.HttpConnectionManager.UpgradeConfig:
    """WebSocket upgrades allowed, as Istio writes every HTTP connection manager."""
    return hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")


def _route_to(cluster: str) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=cluster, timeout=duration_pb2.Duration(seconds=0)),
    )


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a per-service build reads besides the service: the mesh, and the policy bound to it."""

    mesh: MeshModel
    snapshot: PolicySnapshot
    policy: ServicePolicy


class PolicyAware:
    """A generator that reads mesh policy: Pilot calls ``use_policy`` once, before any ``generate``.
    Without it (a generator built outside Pilot) the output is what the registries alone say."""

    policy: AppliedPolicy | None = None

    def use_policy(self, policy: AppliedPolicy) -> None:
        self.policy = policy

    def view(self, node: NodeInfo) -> str | None:
        """The namespace whose policy view ``node`` gets (``exportTo``, :mod:`..policy.applied`);
        ``None`` when every node sees the same policy."""
        if self.policy is None:
            return None
        return self.policy.view(str(node.metadata.get(NAMESPACE_KEY) or ""))

    def policy_snapshot(self, mesh: MeshModel, node: NodeInfo) -> PolicySnapshot | None:
        if self.policy is None:
            return None
        return self.policy.snapshot(mesh).view(self.view(node))


class _PerService(PolicyAware):
    """Shared memo: resources of one service are rebuilt only when that service, or the policy bound
    to it, changed; one memo per policy view (the node's namespace, when policy depends on it)."""

    type_url: str
    protocols: frozenset[str] = HTTP_PROTOCOLS
    reads_other_services = False  # output also depends on other services (routes to them)

    def __init__(self) -> None:
        self._memo: dict[str, tuple[Hashable, list[XdsResource]]] = {}
        self._memos: dict[str | None, dict[str, tuple[Hashable, list[XdsResource]]]] = {}

    def scope(self, node: NodeInfo) -> Hashable:
        return self.view(node)

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        out: list[XdsResource] = []
        memo: dict[str, tuple[Hashable, list[XdsResource]]] = {}
        view = self.view(node)
        previous = self._memos.get(view, {})
        snap = self.policy_snapshot(mesh, node)
        for name, service in mesh.services().items():
            if service.protocol not in self.protocols or not service_visible(service, view):
                continue
            ctx = BuildContext(mesh, snap, snap.for_service(name)) if snap is not None else None
            key: Hashable = mesh.service_index(name)
            if ctx is not None and ctx.policy.revision:
                key = (key, ctx.policy.revision,
                       (mesh.index, self.policy.policy.index) if self.reads_other_services else None)  # type: ignore[union-attr]
            hit = previous.get(name)
            if hit is not None and hit[0] == key:
                built = hit[1]
            else:
                built = self.build(service, mesh.instances(name), ctx)
            memo[name] = (key, built)
            out.extend(built)
        self._memo = self._memos[view] = memo
        return out

    def build(self, service: Service, instances: tuple[ServiceInstance, ...],
              ctx: BuildContext | None = None) -> list[XdsResource]:
        raise NotImplementedError


class ClusterGenerator(_PerService):
    """CDS: one EDS cluster (over ADS) per port of each http/grpc/triple/tcp service; for a proxy that
    holds a workload certificate, mTLS to a service whose instances all run a sidecar (auto mTLS,
    :mod:`sofamesh.pilot.xds.auto_mtls`)."""

    type_url = CLUSTER
    protocols = CLUSTER_PROTOCOLS

    def __init__(self) -> None:
        super().__init__()
        self._tls_memo: dict[str, tuple[Hashable, list[XdsResource]]] = {}

    def scope(self, node: NodeInfo) -> Hashable:
        return holds_certificate(node), self.view(node)

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        out = super().generate(mesh, node)
        return self._with_mtls(mesh, node) if holds_certificate(node) else out

    def _with_mtls(self, mesh: MeshModel, node: NodeInfo) -> list[XdsResource]:
        policy = self.policy
        snap = self.policy_snapshot(mesh, node)
        trust_domain = policy.trust_domain if policy is not None else DEFAULT_TRUST_DOMAIN
        pas = policy.policy.resources("PeerAuthentication") if policy is not None else []
        out: list[XdsResource] = []
        memo: dict[str, tuple[Hashable, list[XdsResource]]] = {}
        for name, (key, built) in self._memo.items():
            tkey = (key, mesh.service_index(name), policy.policy.index if policy is not None else 0, trust_domain)
            hit = self._tls_memo.get(name)
            if hit is not None and hit[0] == tkey:
                res = hit[1]
            else:
                dr = snap.for_service(name).destination_rule if snap is not None else None
                sans = auto_mtls_sans(mesh.services()[name], mesh.instances(name), trust_domain,
                                      dr.spec if dr is not None else None, pas)
                every = meshed(mesh.instances(name))
                own = cluster_tls(dr.spec, name, mesh.services()[name].ports) if dr is not None else {}
                ids = sans
                if ids is None and any(_default_sans(t) for t in own.values()):
                    ids = destination_identities(mesh.services()[name], mesh.instances(name), trust_domain)
                res = built if ids is None else [self._tls(r, ids, every, own.get(r.name), sans is not None)
                                                 for r in built]
            memo[name] = (tkey, res)
            out.extend(res)
        self._tls_memo = memo
        return out

    @staticmethod
    def _tls(res: XdsResource, sans: list[str], every: bool, own: Mapping[str, Any] | None = None,
             auto: bool = True) -> XdsResource:
        """mTLS to every endpoint, or (``every`` False) only to the meshed ones (``auto``: auto mTLS
        applies to the service); a cluster whose DestinationRule sets ``tls`` (``own``) keeps it, and
        ``ISTIO_MUTUAL`` naming no ``subjectAltNames`` checks the destination's identities, as istiod
        writes it."""
        if own is None and not auto:
            return res
        if own is not None:
            if not _default_sans(own):
                return res
            every = True
        c = cluster_pb2.Cluster()
        c.CopyFrom(res.message)
        if every:
            c.transport_socket.CopyFrom(upstream_socket(sans))
        else:
            c.transport_socket_matches.extend(socket_matches(sans))
        return XdsResource(res.name, c, res.wildcard)

    @staticmethod
    def _cluster(service: Service, name: str) -> cluster_pb2.Cluster:
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
        return c

    def build(self, service: Service, instances: tuple[ServiceInstance, ...],
              ctx: BuildContext | None = None) -> list[XdsResource]:
        out = []
        dr = ctx.policy.destination_rule if ctx is not None else None
        http = service.protocol in HTTP_PROTOCOLS
        for port in service.ports:
            name = cluster_name(service, port)
            c = self._cluster(service, name)
            if dr is not None:
                apply_traffic_policy(c, effective_policy(dr.spec, port), http)
            out.append(XdsResource(name, c))
        if ctx is not None:  # DestinationRule subsets: a cluster each (EDS: the instances it selects)
            for subset in ctx.policy.subsets():
                for port in service.ports:
                    name = subset_cluster_name(port, subset["name"], service.name)
                    c = self._cluster(service, name)
                    apply_traffic_policy(c, effective_policy(dr.spec if dr else None, port, subset), http)
                    out.append(XdsResource(name, c))
        return out


def _default_sans(tls: Mapping[str, Any]) -> bool:
    """``ISTIO_MUTUAL`` naming neither ``subjectAltNames`` nor ``sni``: written as auto mTLS is."""
    return tls.get("mode") == "ISTIO_MUTUAL" and not tls.get("subjectAltNames") and not tls.get("sni")


class EndpointGenerator(_PerService):
    """EDS: the instances of each cluster, grouped by locality; every locality has a weight. A
    cluster whose DestinationRule asks for locality load balancing (:mod:`.locality`) gets, for a
    node with a locality, that node's priorities and locality weights."""

    type_url = ENDPOINT
    protocols = CLUSTER_PROTOCOLS

    def __init__(self) -> None:
        super().__init__()
        self._local: dict[tuple[str, Hashable], tuple[list[XdsResource], list[XdsResource]]] = {}
        self._label_keys: tuple[int, frozenset[str]] = (-1, frozenset())

    def _failover_keys(self) -> frozenset[str]:
        if self.policy is None:
            return frozenset()
        model = self.policy.policy
        if self._label_keys[0] != model.index:
            specs = [r.spec for r in model.resources("DestinationRule")]
            self._label_keys = (model.index, failover_label_keys(specs))
        return self._label_keys[1]

    def _local_scope(self, node: NodeInfo) -> Hashable:
        if self.policy is None or not any(node.locality):
            return None
        keys = self._failover_keys()
        return node.locality, frozenset(kv for kv in Source.of(node.metadata).labels if kv[0] in keys)

    def scope(self, node: NodeInfo) -> Hashable:
        return self.view(node), self._local_scope(node)

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        out = list(super().generate(mesh, node))
        local_scope = self._local_scope(node)
        snap = self.policy_snapshot(mesh, node)
        if local_scope is None or snap is None:
            return out
        scope = (self.view(node), local_scope)
        labels = dict(Source.of(node.metadata).labels)
        replaced: dict[str, XdsResource] = {}
        local: dict[tuple[str, Hashable], tuple[list[XdsResource], list[XdsResource]]] = {}
        for name, (_key, built) in self._memo.items():
            sp = snap.for_service(name)
            if sp.destination_rule is None:
                continue
            hit = self._local.get((name, scope))
            if hit is not None and hit[0] is built:
                res = hit[1]
            else:
                res = self._localized(mesh.services()[name], mesh.instances(name), sp, node.locality, labels)
            local[(name, scope)] = (built, res)
            replaced.update((r.name, r) for r in res)
        memo = self._memo
        self._local = {k: v for k, v in self._local.items() if k[0] in memo and v[0] is memo[k[0]][1]} | local
        return [replaced.get(r.name, r) for r in out] if replaced else out

    def _localized(self, service: Service, instances: tuple[ServiceInstance, ...], sp: ServicePolicy,
                   proxy: tuple[str, str, str], labels: dict[str, str]) -> list[XdsResource]:
        dr = sp.destination_rule
        spec = dr.spec if dr is not None else None
        clusters: list[tuple[str, tuple[ServiceInstance, ...], dict[str, Any]]] = [
            (cluster_name(service, port), instances, effective_policy(spec, port)) for port in service.ports]
        for subset in sp.subsets():
            chosen = tuple(i for i in instances if selects(subset.get("labels") or {}, i))
            clusters += [(subset_cluster_name(port, subset["name"], service.name), chosen,
                          effective_policy(spec, port, subset)) for port in service.ports]
        return [XdsResource(name, self.assignment(name, insts, locality_groups(insts, policy, proxy, labels)))
                for name, insts, policy in clusters if locality_applies(policy)]

    def build(self, service: Service, instances: tuple[ServiceInstance, ...],
              ctx: BuildContext | None = None) -> list[XdsResource]:
        out = [XdsResource(cluster_name(service, port), self.assignment(cluster_name(service, port), instances))
               for port in service.ports]
        if ctx is not None:
            for subset in ctx.policy.subsets():
                chosen = tuple(i for i in instances if selects(subset.get("labels") or {}, i))
                for port in service.ports:
                    name = subset_cluster_name(port, subset["name"], service.name)
                    out.append(XdsResource(name, self.assignment(name, chosen)))
        return out

    @staticmethod
    def assignment(name: str, instances: tuple[ServiceInstance, ...],
                   groups: list[Group] | None = None) -> endpoint_pb2.ClusterLoadAssignment:
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        for g in groups_by_locality(instances) if groups is None else groups:
            region, zone, sub_zone = g.locality
            cla.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=g.weight), priority=g.priority,
                lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                    endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(address=i.address, port_value=i.port))),
                    health_status=_HEALTH[i.health],
                    load_balancing_weight=wrappers_pb2.UInt32Value(value=i.weight),
                ) for i in g.instances],
            ))
            for lb, inst in zip(cla.endpoints[-1].lb_endpoints, g.instances, strict=True):
                if is_meshed(inst):
                    mark_meshed(lb)
                if inst.labels or inst.version:
                    lb.metadata.filter_metadata[LB_METADATA].update(endpoint_labels(inst))
        return cla


class ApiListenerGenerator(_PerService):
    """LDS for proxyless gRPC: listener ``NAME`` (and ``NAME:PORT``) with an ``api_listener``.

    These resources are sent only to nodes that name them, never on a wildcard subscription.
    """

    type_url = LISTENER
    protocols = PROXYLESS_PROTOCOLS
    reads_other_services = True

    def build(self, service: Service, instances: tuple[ServiceInstance, ...],
              ctx: BuildContext | None = None) -> list[XdsResource]:
        names = [(service.name, service.port)] + [(f"{service.name}:{p}", p) for p in service.ports]
        out = []
        vs = ctx.policy.virtual_service if ctx is not None else None
        for listener_name, port in names:
            routes = http_routes(vs, ctx.snapshot, ctx.mesh, port, Source(), proxyless=True) \
                if vs is not None and ctx else []
            hcm = hcm_pb2.HttpConnectionManager(
                stat_prefix=listener_name,
                route_config=route_pb2.RouteConfiguration(name=listener_name, virtual_hosts=[
                    route_components_pb2.VirtualHost(name=service.name, domains=["*"],
                                                     routes=routes or [_route_to(cluster_name(service, port))])]),
                http_filters=[fault_http_filter(), _router_filter()],
            )
            listener = listener_pb2.Listener(name=listener_name,
                                             api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm)))
            out.append(XdsResource(listener_name, listener, wildcard=False))
        return out


def outbound_address(node: NodeInfo) -> tuple[str, int]:
    """(address, port) of the node's outbound HTTP listener."""
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
        return outbound_address(node), is_gateway(node)

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        if is_gateway(node):
            return []  # a gateway's listeners are its Gateways' (:mod:`.gateways`)
        address, port = outbound_address(node)
        name = f"outbound|{port}"
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix=f"outbound_{port}", codec_type=hcm_pb2.HttpConnectionManager.AUTO,
            rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=name),
            http_filters=[cors_http_filter(), fault_http_filter(), _router_filter()],  # Istio's order
            upgrade_configs=[websocket_upgrade()],
        )
        listener = listener_pb2.Listener(
            name=name,
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=address, port_value=port)),
            filter_chains=[listener_components_pb2.FilterChain(filters=[
                listener_components_pb2.Filter(name=_HCM, typed_config=_pack(hcm))])],
        )
        return [XdsResource(name, listener)]


class OutboundRouteGenerator(PolicyAware):
    """RDS for Envoy: route config ``outbound|PORT``, one virtual host per port of each
    http/grpc/triple service, its domains every host name of the service (``reviews``,
    ``reviews.default``, ``reviews.default.svc``, ``reviews.default.svc.cluster.local``; with
    ``:*`` on the first port, ``:PORT`` on the others); its routes the service's VirtualService's, or
    one route to the service's cluster."""

    type_url = ROUTE

    def __init__(self) -> None:
        self._memo: dict[tuple[int, int, Source | None, str | None], list[route_components_pb2.VirtualHost]] = {}

    def _source(self, node: NodeInfo) -> Source | None:
        if self.policy is None or not self.policy.source_scoped():
            return None
        return Source.of(node.metadata)

    def scope(self, node: NodeInfo) -> Hashable:
        return outbound_address(node)[1], self._source(node), self.view(node)

    def _virtual_hosts(self, mesh: MeshModel, node: NodeInfo) -> list[route_components_pb2.VirtualHost]:
        source = self._source(node)
        key = (mesh.index, self.policy.policy.index if self.policy is not None else 0, source, self.view(node))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        snap = self.policy_snapshot(mesh, node)
        hosts = []
        used: set[str] = set()
        view = self.view(node)
        for name, service in mesh.services().items():
            if service.protocol not in HTTP_PROTOCOLS or not service_visible(service, view):
                continue
            vs = snap.for_service(name).virtual_service if snap is not None else None
            names = [h for h in service_hosts(service) if h not in used]
            used.update(names)
            for i, port in enumerate(service.ports):
                domains = [d for h in names for d in ((h, f"{h}:*") if i == 0 else (f"{h}:{port}",))]
                if not domains:
                    continue
                routes = http_routes(vs, snap, mesh, port, source or Source()) if vs is not None and snap else []
                hosts.append(route_components_pb2.VirtualHost(
                    name=name if i == 0 else f"{name}:{port}", domains=domains,
                    routes=routes or [_route_to(cluster_name(service, port))]))
        self._memo = {k: v for k, v in self._memo.items() if k[:2] == key[:2]}
        self._memo[key] = hosts
        return hosts

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        _address, port = outbound_address(node)
        name = f"outbound|{port}"
        config = route_pb2.RouteConfiguration(name=name, virtual_hosts=self._virtual_hosts(mesh, node))
        return [XdsResource(name, config)]


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    catalog.add("cds.outbound", ClusterGenerator())
    catalog.add("eds.outbound", EndpointGenerator())
    catalog.add("lds.api_listener", ApiListenerGenerator())
    catalog.add("lds.outbound_http", OutboundListenerGenerator())
    catalog.add("rds.outbound_http", OutboundRouteGenerator())
