"""VirtualService ``tcp`` routes -> outbound TCP listeners (``envoy.filters.network.tcp_proxy``).

Istio gives each TCP service port an outbound listener on the service's VIP and port, reached
through iptables. Without iptables an application must connect to an address the proxy listens
on, so each port of a ``tcp`` service gets a listener ``outbound|tcp|PORT|NAME`` bound to:
- the node's metadata ``sofamesh.tcp_address`` when it has one (every TCP service port of that
  proxy on its own loopback address: several proxies can share one machine), else
- the service's VIP: metadata ``vip``, which a ServiceEntry's first loopback ``addresses`` entry
  sets (``127.0.0.0/8`` or ``::1``: bindable without privileges or iptables); else
- nothing: a TCP service port with no address to listen on gets no listener.
The port is the service port. When two services want the same address and port, the first by name
gets it; a port equal to the node's outbound HTTP listener's is skipped.

The listener's ``tcp_proxy`` goes to the first ``tcp`` route of the service's VirtualService whose
``match`` applies (none: every connection): ``port`` equal to the listener's, ``sourceLabels`` /
``sourceNamespace`` of the node (metadata ``LABELS`` / ``NAMESPACE``), ``gateways`` including
``mesh`` (or none), ``destinationSubnets`` containing the listener's address (a connection's
destination is the address it connected to, which is known here: Istio's ``prefix_ranges`` filter
chain match decided once). The route's destinations become ``weighted_clusters`` (weight 0 left
out when there are several; a destination without ``port`` takes the listener's port when its
service has it); one destination is ``cluster``. Without a VirtualService, or with no applicable
route, the service's own cluster. A route none of whose destinations is served leaves the port
without a listener (connections are refused rather than sent elsewhere).

``tls`` routes (TLS passes through, as Istio's for a TLS port): the listener gets Envoy's
``tls_inspector`` and, ahead of the chain above, one filter chain per ``tls`` route whose matches
apply (the same rules), ``filter_chain_match.server_names`` its matches' ``sniHosts`` (a name an
earlier route took stays with it), ``tcp_proxy`` to its destinations. A connection whose SNI no
route names (or that is not TLS) takes the chain above, as a plain TCP connection would (our
choice where Istio has a TLS port of a service without a matching route answered by no chain).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.policy.applied import service_visible
from sofamesh.pilot.policy.hosts import VIP_METADATA
from sofamesh.pilot.xds.generator import LISTENER, NodeInfo, XdsResource, is_gateway
from sofamesh.pilot.xds.generators import PolicyAware, cluster_name, outbound_address
from sofamesh.pilot.xds.virtual_services import Destinations, Source, match_applies

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.model import MeshModel, Service
    from sofamesh.pilot.policy.applied import PolicySnapshot
    from sofamesh.pilot.policy.resource import Resource
    from sofamesh.pilot.xds.generator import XdsGenerator

TCP_ADDRESS_KEY = "sofamesh.tcp_address"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TCP_PROTOCOLS = frozenset({"tcp"})


def listen_address(service: Service, node: NodeInfo) -> str:
    """Where ``node``'s proxy listens for ``service`` (``""``: nowhere)."""
    own = node.metadata.get(TCP_ADDRESS_KEY)
    if own:
        return str(own)
    return service.metadata.get(VIP_METADATA, "")


def _in_subnets(address: str, subnets: Iterable[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_unspecified:
        return False  # a wildcard listener: the destination is not one address
    for s in subnets:
        try:
            if ip in ipaddress.ip_network(str(s), strict=False):
                return True
        except ValueError:
            continue
    return False


def l4_match_applies(m: Mapping[str, Any], port: int, source: Source, address: str) -> bool:
    """Whether a ``tcp`` (or ``tls``) route match applies to the listener at ``address:port`` of a
    node of ``source``."""
    if not match_applies(m, port, source):
        return False
    subnets = m.get("destinationSubnets")
    return not subnets or _in_subnets(address, subnets)


def weighted_destinations(route: Iterable[Any], dests: Destinations, port: int) -> list[tuple[str, int]]:
    """A route's ``route`` entries -> [(cluster, weight)] of those some registry serves."""
    entries = [d for d in route if isinstance(d, Mapping)]
    out = []
    for d in entries:
        dest = dict(d.get("destination") or {})
        weight = int(d.get("weight", 0) or 0)
        if weight == 0 and len(entries) > 1:
            continue
        resolved = None
        if not dest.get("port"):
            resolved = dests.cluster({**dest, "port": {"number": port}})
        resolved = resolved or dests.cluster(dest)
        if resolved is not None:
            out.append((resolved[0], weight or 1))
    return out


def tcp_clusters(
    vs: Resource | None,
    snap: PolicySnapshot | None,
    mesh: MeshModel,
    service: Service,
    port: int,
    source: Source,
    address: str,
) -> tuple[str, list[tuple[str, int]]] | None:
    """(the route's name, [(cluster, weight)]) for a connection to ``service`` at ``address:port``;
    None when the applicable route has no served destination."""
    if vs is not None and snap is not None:
        dests = Destinations(snap, mesh, vs.namespace)
        for i, tcp in enumerate(vs.spec.get("tcp") or []):
            if not isinstance(tcp, Mapping):
                continue
            if not any(l4_match_applies(m, port, source, address) for m in tcp.get("match") or [{}]):
                continue
            chosen = weighted_destinations(tcp.get("route") or [], dests, port)
            return (f"{vs.namespace}.{vs.name}.tcp.{i}", chosen) if chosen else None
    return cluster_name(service, port), [(cluster_name(service, port), 1)]


def tls_chains(
    vs: Resource | None, snap: PolicySnapshot | None, mesh: MeshModel, port: int, source: Source, address: str
) -> list[tuple[list[str], str, list[tuple[str, int]]]]:
    """The ``tls`` routes that apply at ``address:port``: [(server names, route name, [(cluster,
    weight)])], in order; a name an earlier route took is left to it (Envoy refuses two chains with
    the same match), a route left with no name or no served destination is skipped."""
    if vs is None or snap is None:
        return []
    dests = Destinations(snap, mesh, vs.namespace)
    out = []
    taken: set[str] = set()
    for i, tls in enumerate(vs.spec.get("tls") or []):
        if not isinstance(tls, Mapping):
            continue
        names: list[str] = []
        for m in tls.get("match") or []:
            if isinstance(m, Mapping) and l4_match_applies(m, port, source, address):
                names += [str(n).lower() for n in m.get("sniHosts") or [] if str(n).lower() not in taken]
        names = list(dict.fromkeys(names))
        chosen = weighted_destinations(tls.get("route") or [], dests, port) if names else []
        if chosen:
            taken.update(names)
            out.append((names, f"{vs.namespace}.{vs.name}.tls.{i}", chosen))
    return out


def tcp_proxy(stat_prefix: str, clusters: list[tuple[str, int]]) -> listener_components_pb2.Filter:
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(clusters) == 1:
        tp.cluster = clusters[0][0]
    else:
        tp.weighted_clusters.clusters.extend(
            tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight) for name, weight in clusters
        )
    packed = any_pb2.Any()
    packed.Pack(tp)
    return listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=packed)


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    packed = any_pb2.Any()
    packed.Pack(tls_inspector_pb2.TlsInspector())
    return listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR, typed_config=packed)


class TcpListenerGenerator(PolicyAware):
    """LDS: an outbound listener with ``tcp_proxy`` per port of each ``tcp`` service that has an
    address to listen on (module docstring)."""

    type_url = LISTENER

    def __init__(self) -> None:
        self._memo: dict[Hashable, tuple[Hashable, list[XdsResource]]] = {}

    def _source(self, node: NodeInfo) -> Source | None:
        if self.policy is None or not self.policy.source_scoped():
            return None
        return Source.of(node.metadata)

    def scope(self, node: NodeInfo) -> Hashable:
        return (node.metadata.get(TCP_ADDRESS_KEY), outbound_address(node), self._source(node), self.view(node),
                is_gateway(node))

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        if is_gateway(node):
            return []  # a gateway's listeners are its Gateways' (:mod:`.gateways`)
        scope = self.scope(node)
        key = (mesh.index, self.policy.policy.index if self.policy is not None else 0)
        hit = self._memo.get(scope)
        if hit is not None and hit[0] == key:
            return hit[1]
        out = self._build(mesh, node)
        self._memo = {s: v for s, v in self._memo.items() if v[0] == key}
        self._memo[scope] = (key, out)
        return out

    def _build(self, mesh: MeshModel, node: NodeInfo) -> list[XdsResource]:
        snap = self.policy_snapshot(mesh, node)
        view = self.view(node)
        source = self._source(node) or Source()
        taken = {outbound_address(node)}
        out = []
        for name, service in sorted(mesh.services().items()):
            if service.protocol not in TCP_PROTOCOLS or not service_visible(service, view):
                continue
            address = listen_address(service, node)
            if not address:
                continue
            vs = snap.for_service(name).virtual_service if snap is not None else None
            for port in service.ports:
                if (address, port) in taken:
                    continue
                chosen = tcp_clusters(vs, snap, mesh, service, port, source, address)
                by_sni = tls_chains(vs, snap, mesh, port, source, address)
                if chosen is None and not by_sni:
                    continue
                taken.add((address, port))
                lname = f"outbound|tcp|{port}|{name}"
                listener = listener_pb2.Listener(
                    name=lname,
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
                    ),
                    filter_chains=[
                        listener_components_pb2.FilterChain(
                            filter_chain_match=listener_components_pb2.FilterChainMatch(server_names=names),
                            filters=[tcp_proxy(prefix, clusters)],
                        )
                        for names, prefix, clusters in by_sni
                    ],
                )
                if chosen is not None:  # connections without a listed server name (or not TLS)
                    listener.filter_chains.append(listener_components_pb2.FilterChain(filters=[tcp_proxy(*chosen)]))
                if by_sni:
                    listener.listener_filters.append(tls_inspector())
                out.append(XdsResource(lname, listener))
        return out


__all__ = [
    "TCP_ADDRESS_KEY",
    "TCP_PROXY_FILTER",
    "TLS_INSPECTOR",
    "TcpListenerGenerator",
    "l4_match_applies",
    "listen_address",
    "tcp_clusters",
    "tcp_proxy",
    "tls_chains",
    "tls_inspector",
    "weighted_destinations",
]


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    catalog.add("lds.outbound_tcp", TcpListenerGenerator())
