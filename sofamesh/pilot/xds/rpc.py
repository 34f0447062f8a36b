"""xDS generators for framed RPC protocols (Bolt, Dubbo, a third party's): a protocol plugin
registers them from its own ``pilot_register_xds_generators`` hook with :func:`rpc_generators`.

For each protocol ``P`` they produce:
- CDS/EDS: ``outbound|PORT|NAME`` for every service whose protocol is ``P`` (EDS over ADS, round
  robin; the same shape as the built-in HTTP clusters), with ``filter_metadata.sofamesh.protocol: P``;
- LDS (for sofamesh sidecars only: user agent ``sofamesh``): ``outbound|P|PORT``, the sidecar's
  egress listener for ``P`` on ``ADDRESS:PORT``, taken from
  node metadata ``sofamesh.P_address`` / ``sofamesh.P_port`` (default ``127.0.0.1`` and the
  protocol's egress port, Bolt 12220, Dubbo 20880). Its only network filter is
  ``sofamesh.filters.network.rpc_proxy`` whose config is a ``xds.type.v3.TypedStruct`` of type
  ``type.googleapis.com/sofamesh.config.rpc.v1.RpcProxy``: the protocol and one route per service,
  matching the service name exactly, to that service's cluster (docs/xds.md).
A service's metadata ``timeout_ms`` sets its route timeout (default 10000; the request's own
timeout caps it in the data plane). A DestinationRule ``consistentHash`` on the service gives its
routes a ``hash_policy`` on the named request attribute (:func:`..meta_routers.rpc_hash_policy`).

Subsets: when a service's instances carry more than one (version, group) pair, each pair with a
version or a group gets its own cluster ``outbound|PORT|NAME|VERSION|GROUP`` (EDS: only those
instances) and a route matching the service and that version and/or group, ahead of the service's
catch-all route; so a Dubbo call for version 2.0.0 reaches only 2.0.0 providers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from google.protobuf import any_pb2, struct_pb2
from xds.type.v3 import typed_struct_pb2

from sofamesh.pilot.policy.applied import service_visible
from sofamesh.pilot.xds.generator import LISTENER, NodeInfo, XdsResource, is_gateway
from sofamesh.pilot.xds.generators import BuildContext, ClusterGenerator, EndpointGenerator, PolicyAware, cluster_name
from sofamesh.pilot.xds.meta_routers import rate_limits, rpc_hash_policy, rpc_routes, timeout_of
from sofamesh.pilot.xds.virtual_services import Destinations

if TYPE_CHECKING:
    from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
    from sofamesh.pilot.xds.generator import XdsGenerator

RPC_PROXY_FILTER = "sofamesh.filters.network.rpc_proxy"
RPC_PROXY_TYPE_URL = "type.googleapis.com/sofamesh.config.rpc.v1.RpcProxy"
DEFAULT_TIMEOUT_MS = 10_000


def subsets(instances: Iterable[ServiceInstance]) -> dict[tuple[str, str], list[ServiceInstance]]:
    """(version, group) -> instances, when the instances carry more than one such pair."""
    groups: dict[tuple[str, str], list[ServiceInstance]] = {}
    for inst in instances:
        groups.setdefault((inst.version, inst.group), []).append(inst)
    if len(groups) < 2:
        return {}
    return {k: v for k, v in sorted(groups.items()) if k != ("", "")}


def subset_name(cluster: str, version: str, group: str) -> str:
    return f"{cluster}|{version}|{group}"


CLUSTER_METADATA = "sofamesh"  # filter_metadata key of an RPC cluster: {"protocol": "dubbo"}


class RpcClusterGenerator(ClusterGenerator):
    """CDS: the service's clusters, plus one per (version, group) subset; each names its protocol in
    its metadata (``filter_metadata.sofamesh.protocol``)."""

    def build(self, service: Service, instances: tuple[ServiceInstance, ...],
              ctx: BuildContext | None = None) -> list[XdsResource]:
        out = super().build(service, instances, ctx)
        for res in out:  # the protocol, for a sidecar route that calls it from HTTP (a transcoder)
            res.message.metadata.filter_metadata[CLUSTER_METADATA].fields["protocol"].string_value = service.protocol
        base = [res for res in out if res.name in {cluster_name(service, p) for p in service.ports}]
        for version, group in subsets(instances):
            for res in base:
                c = type(res.message)()
                c.CopyFrom(res.message)
                c.name = subset_name(res.name, version, group)
                c.eds_cluster_config.service_name = c.name
                out.append(XdsResource(c.name, c))
        return out


class RpcEndpointGenerator(EndpointGenerator):
    """EDS: the service's endpoints, plus each subset's own."""

    def build(self, service: Service, instances: tuple[ServiceInstance, ...],
              ctx: BuildContext | None = None) -> list[XdsResource]:
        out = super().build(service, instances, ctx)
        for (version, group), insts in subsets(instances).items():
            for res in super().build(service, tuple(insts)):
                res.message.cluster_name = subset_name(res.name, version, group)
                out.append(XdsResource(res.message.cluster_name, res.message))
        return out


class RpcListenerGenerator(PolicyAware):
    """LDS: the egress listener of one RPC protocol with its routes in typed extension config; a
    service with a MetaRouter gets the MetaRouter's routes instead of its own."""

    type_url = LISTENER

    def __init__(self, protocol: str, default_port: int, default_address: str = "127.0.0.1",
                 always_listen: bool = False) -> None:
        self.protocol = protocol
        self.default_port = default_port
        self.default_address = default_address
        # Bolt and Dubbo egress ports are always open on a sidecar (as MOSN's are); a plugin's protocol
        # gets its listener only once the mesh has a service of it, so an installed-but-unused plugin
        # takes no port on every sidecar.
        self.always_listen = always_listen
        # per policy view (the node's namespace, when policy depends on it): (mesh, policy) index, routes, filters
        self._memos: dict[str | None, tuple[tuple[int, int], list[dict[str, Any]], list[dict[str, Any]]]] = {}

    def egress(self, node: NodeInfo) -> tuple[str, int]:
        meta = node.metadata
        address = str(meta.get(f"sofamesh.{self.protocol}_address", self.default_address))
        try:
            port = int(meta.get(f"sofamesh.{self.protocol}_port", self.default_port))
        except (TypeError, ValueError):
            port = self.default_port
        return address, port

    @staticmethod
    def wants(node: NodeInfo) -> bool:
        """Only sofamesh sidecars understand ``rpc_proxy`` (Envoy would NACK the whole LDS update);
        another client opts in with node metadata ``sofamesh.rpc_egress: true``. Gateways get none."""
        if is_gateway(node):
            return False
        return node.user_agent.startswith("sofamesh") or node.metadata.get("sofamesh.rpc_egress") is True

    def scope(self, node: NodeInfo) -> Hashable:
        return (self.wants(node), *self.egress(node), self.view(node))

    def routes(self, mesh: MeshModel, view: str | None = None) -> list[dict[str, Any]]:
        return self._build(mesh, view)[0]

    def filters(self, mesh: MeshModel, view: str | None = None) -> list[dict[str, Any]]:
        """The listener's kernel filters: ``quota.local`` when a MetaRouter has a ``localRateLimit``."""
        return self._build(mesh, view)[1]

    def _build(self, mesh: MeshModel, view: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Routes and filters as a proxy in namespace ``view`` sees them: only the services exported
        to it (ServiceEntry ``exportTo``), the MetaRouter it sees for each (``exportTo``, its own
        namespace's first)."""
        key = (mesh.index, self.policy.policy.index if self.policy is not None else 0)
        memo = self._memos.get(view)
        if memo is not None and memo[0] == key:
            return memo[1], memo[2]
        snap = self.policy.snapshot(mesh).view(view) if self.policy is not None else None
        routes = []
        overrides: list[dict[str, Any]] = []
        for name, service in sorted(mesh.services().items()):
            if service.protocol != self.protocol or not service_visible(service, view):
                continue
            timeout = timeout_of(service, DEFAULT_TIMEOUT_MS)
            mr = snap.for_service(name).meta_router if snap is not None else None
            if mr is not None and snap is not None:
                routes.extend(rpc_routes(mr, service, Destinations(snap, mesh, mr.namespace), timeout))
                overrides.extend(rate_limits(mr, service))
                continue
            cluster = cluster_name(service, service.port)
            hashing = rpc_hash_policy(Destinations(snap, mesh, "").hash_policy({}, (cluster, name, service.port))
                                      ) if snap is not None else []
            extra = {"hash_policy": hashing} if hashing else {}
            for version, group in subsets(mesh.instances(name)):
                match: dict[str, Any] = {"service": {"exact": name}}
                if version:
                    match["version"] = {"exact": version}
                if group:
                    match["group"] = {"exact": group}
                routes.append({"name": subset_name(name, version, group), "match": match,
                               "cluster": subset_name(cluster, version, group), "timeout_ms": timeout, **extra})
            routes.append({"name": name, "match": {"service": {"exact": name}}, "cluster": cluster,
                           "timeout_ms": timeout, **extra})
        filters = [{"type": "quota.local", "config": {"overrides": overrides}}] if overrides else []
        if any(k[0] != key for k in self._memos.values()):
            self._memos = {v: m for v, m in self._memos.items() if m[0] == key}  # drop stale views
        self._memos[view] = (key, routes, filters)
        return routes, filters

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        if not self.wants(node):
            return []
        routes, filters = self._build(mesh, self.view(node))
        if not routes and not self.always_listen:
            return []
        address, port = self.egress(node)
        value = struct_pb2.Struct()
        value.update({"protocol": self.protocol, "stat_prefix": f"outbound_{self.protocol}_{port}",
                      "routes": routes, **({"filters": filters} if filters else {})})
        config = any_pb2.Any()
        config.Pack(typed_struct_pb2.TypedStruct(type_url=RPC_PROXY_TYPE_URL, value=value))
        name = f"outbound|{self.protocol}|{port}"
        listener = listener_pb2.Listener(
            name=name,
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port)),
            filter_chains=[listener_components_pb2.FilterChain(filters=[
                listener_components_pb2.Filter(name=RPC_PROXY_FILTER, typed_config=config)])],
        )
        return [XdsResource(name, listener)]


def rpc_generators(protocol: str, default_port: int, always_listen: bool = False) -> dict[str, XdsGenerator]:
    """The generators a protocol plugin registers: ``{catalog name: generator}``. Services of
    ``protocol`` are accepted by the mesh model from then on (``model.register_protocol``)."""
    from sofamesh.pilot.model import register_protocol

    register_protocol(protocol, default_port)
    clusters = RpcClusterGenerator()
    clusters.protocols = frozenset({protocol})
    endpoints = RpcEndpointGenerator()
    endpoints.protocols = frozenset({protocol})
    return {f"cds.{protocol}": clusters, f"eds.{protocol}": endpoints,
            f"lds.{protocol}": RpcListenerGenerator(protocol, default_port, always_listen=always_listen)}


__all__ = ["CLUSTER_METADATA", "RPC_PROXY_FILTER", "RPC_PROXY_TYPE_URL", "RpcClusterGenerator", "RpcEndpointGenerator",
           "RpcListenerGenerator", "rpc_generators", "subset_name", "subsets"]
