"""Istio ``Gateway`` resources -> the listeners and route configs of a gateway proxy, as Istio's
``gateway.go`` builds them for its ``router`` nodes.

Which nodes are gateways: a node whose id starts with ``router~`` (Istio's node type for its
ingress and egress gateways; sidecars are ``sidecar~``). A Gateway applies to such a node when its
``selector`` labels are all among the node's metadata ``LABELS`` (an empty selector selects every
gateway, as Istio's ``SubsetOf``). A gateway node gets none of the sidecar's outbound or RPC egress
listeners; it gets every cluster, as a sidecar does.

Per port of the selected servers (servers of several Gateways on one port share it):
- listener ``ADDRESS_PORT`` bound to the server's ``bind``, else node metadata
  ``sofamesh.gateway_address``, else ``0.0.0.0`` (Istio binds every address);
- HTTP / HTTP2 / GRPC servers: one filter chain, an HCM reading route config ``http.PORT``; a
  server with ``tls.httpsRedirect`` marks its hosts' virtual hosts ``require_tls: ALL`` (Envoy then
  answers plaintext requests with a 301 to ``https``);
- HTTPS and TLS servers with mode SIMPLE, MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL: one filter chain
  per server, ``server_names`` its hosts (none for ``*``), TLS terminated with its
  ``serverCertificate`` / ``privateKey`` files, or with the Secret its ``credentialName`` names,
  fetched over ADS (SDS ``kubernetes://NAME``, :mod:`.gateway_credentials`); ``caCertificates``
  (or SDS ``kubernetes://NAME-cacert``) and a required client certificate for MUTUAL (optional for
  OPTIONAL_MUTUAL), the workload certificate (SDS ``default`` / ``ROOTCA``) for ISTIO_MUTUAL, ALPN
  ``h2``, ``http/1.1`` (HTTPS only); HTTPS chains
  read route config ``https.PORT``: one per port, not one per server as Istio's
  ``https.PORT.NAME.GATEWAY.NAMESPACE`` (the same virtual hosts either way, since each only
  holds the hosts of the servers it serves);
- PASSTHROUGH (HTTPS or TLS): one filter chain per ``tls`` route of a bound VirtualService whose
  ``sniHosts`` fall in the server's hosts, ``server_names`` those names, ``tcp_proxy`` to the
  route's destinations; TLS is not terminated. The listener gets ``tls_inspector``.
A server whose ``credentialName`` names no Secret of the gateway's namespace (or, for MUTUAL, no
client CA), a TLS server with a terminating mode (its ``tcp`` routes are not built), or
``AUTO_PASSTHROUGH`` is left out, with a warning naming it (the other servers serve, as Istio's);
a server name taken by an earlier chain of the port stays with it (Envoy refuses two chains with the
same match).

Route configs: one virtual host per host of each bound VirtualService (``gateways`` naming
``NAMESPACE/NAME``, or ``NAME`` in the Gateway's own namespace) that a server of the port serves
(the narrower of the two names; a server host ``ns/host`` takes VirtualServices of namespace ``ns``
only, ``*/`` of any, ``./`` of the Gateway's), domains ``HOST`` and ``HOST:*``; its routes the
VirtualService's ``http`` routes whose matches apply to this gateway (match ``gateways``, ``port``)
(:func:`.virtual_services.http_routes`). A host no VirtualService binds has no virtual host (404).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import any_pb2

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.xds.auto_mtls import downstream_socket
from sofamesh.pilot.xds.edge_filters import EdgeFilters, edge_http_filters
from sofamesh.pilot.xds.gateway_credentials import GatewayCredentials, ads_secret, credentials_for
from sofamesh.pilot.xds.generator import GATEWAY_NODE_PREFIX, LISTENER, ROUTE, NodeInfo, XdsResource, is_gateway
from sofamesh.pilot.xds.generators import DEFAULT_TRUST_DOMAIN, PolicyAware, websocket_upgrade
from sofamesh.pilot.xds.tcp_routes import tcp_proxy, tls_inspector, weighted_destinations
from sofamesh.pilot.xds.virtual_services import (
    Destinations,
    Source,
    cors_http_filter,
    fault_http_filter,
    http_routes,
)

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.model import MeshModel
    from sofamesh.pilot.policy.applied import PolicySnapshot
    from sofamesh.pilot.policy.resource import Resource
    from sofamesh.pilot.security.jwks import JwksResolver
    from sofamesh.pilot.xds.generator import XdsGenerator

log = logging.getLogger("sofamesh.pilot.gateways")

GATEWAY_ADDRESS_KEY = "sofamesh.gateway_address"
DEFAULT_GATEWAY_ADDRESS = "0.0.0.0"
HTTP_SERVER_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})
TLS_SERVER_PROTOCOLS = frozenset({"HTTPS", "TLS"})
TERMINATING_MODES = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"})
GATEWAY_ALPN = ("h2", "http/1.1")  # Istio's for HTTPS gateway servers
_HCM = "envoy.filters.network.http_connection_manager"
_ROUTER = "envoy.filters.http.router"
_TLS = "envoy.transport_sockets.tls"


@dataclass(frozen=True, slots=True)
class Server:
    """One server of a Gateway that selects the node."""

    gateway: Resource
    index: int
    spec: Mapping[str, Any]
    port: int
    protocol: str
    bind: str

    @property
    def tls(self) -> Mapping[str, Any]:
        tls = self.spec.get("tls")
        return tls if isinstance(tls, Mapping) else {}

    @property
    def mode(self) -> str:
        return str(self.tls.get("mode") or "PASSTHROUGH")

    @property
    def ref(self) -> str:
        return f"Gateway {self.gateway.namespace}/{self.gateway.name} spec.servers[{self.index}]"

    def hosts(self) -> list[tuple[str, str]]:
        """(namespace selector, host): ``*`` any namespace, ``.`` the Gateway's."""
        out = []
        for h in self.spec.get("hosts") or []:
            ns, sep, host = str(h).rpartition("/")
            ns = ns if sep else "*"
            out.append((self.gateway.namespace if ns == "." else ns, host.lower()))
        return out

    def names(self) -> list[str]:
        """The server names (SNI) of this server's filter chain; empty for ``*``."""
        hosts = [h for _ns, h in self.hosts()]
        return [] if "*" in hosts else list(dict.fromkeys(hosts))


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) or host == pattern
    return host == pattern


def narrower(server_host: str, vs_host: str) -> str | None:
    """The host both a server's and a VirtualService's host name cover (the narrower one), ``None``
    when they do not meet."""
    vs_host = vs_host.lower()
    if _host_matches(server_host, vs_host):
        return vs_host
    if _host_matches(vs_host, server_host):
        return server_host
    return None


def gateway_names(gateway: Resource, namespace: str) -> frozenset[str]:
    """What a VirtualService in ``namespace`` calls ``gateway`` in its ``gateways``."""
    full = f"{gateway.namespace}/{gateway.name}"
    return frozenset({full, gateway.name}) if namespace == gateway.namespace else frozenset({full})


def selected_servers(gateways: Iterable[Resource], node: NodeInfo) -> dict[int, list[Server]]:
    """The servers of the Gateways selecting ``node``, by port number, in Gateway order."""
    labels = set(Source.of(node.metadata).labels)
    default_bind = str(node.metadata.get(GATEWAY_ADDRESS_KEY) or DEFAULT_GATEWAY_ADDRESS)
    out: dict[int, list[Server]] = {}
    for gw in gateways:
        selector = gw.spec.get("selector") or {}
        if not {(str(k), str(v)) for k, v in selector.items()} <= labels:
            continue
        for i, s in enumerate(gw.spec.get("servers") or []):
            port = s.get("port") or {}
            number = int(port.get("number") or 0)
            bind = str(s.get("bind") or default_bind)
            out.setdefault(number, []).append(Server(gw, i, s, number, str(port.get("protocol") or "").upper(), bind))
    return out


def bound_virtual_services(vss: Iterable[Resource], gateway: Resource) -> list[Resource]:
    """The VirtualServices whose ``gateways`` name ``gateway``."""
    out = []
    for vs in vss:
        names = gateway_names(gateway, vs.namespace)
        if names.intersection(vs.spec.get("gateways") or []):
            out.append(vs)
    return out


def credential_name(server: Server) -> str | None:
    """The Secret a server's certificate comes from: ``credentialName``, or the one entry of
    ``credentialNames``."""
    tls = server.tls
    names = tls.get("credentialNames") or []
    return str(tls.get("credentialName") or (names[0] if len(names) == 1 else "")) or None


def _credential_problem(server: Server, creds: GatewayCredentials) -> str | None:
    if server.protocol not in TLS_SERVER_PROTOCOLS or server.mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        return None
    tls = server.tls
    if len(tls.get("credentialNames") or []) > 1:
        return "credentialNames with several Secrets (one certificate per key type) is not supported: name one"
    name = credential_name(server)
    if name is None:
        return None
    if creds.cert(name) is None:
        return (
            f"credentialName {name!r}: no Secret {name!r} with tls.crt and tls.key in namespace "
            f"{creds.namespace} (the gateway's; sofamesh apply a kind: Secret)"
        )
    if server.mode != "SIMPLE" and creds.ca(name) is None:
        return (
            f"credentialName {name!r}: {server.mode} needs a client CA: ca.crt in Secret {name!r} or a "
            f"Secret {name}-cacert in namespace {creds.namespace}"
        )
    return None


def _usable(server: Server, creds: GatewayCredentials) -> str | None:
    """Why ``server`` is left out of the gateway's listeners, ``None`` when it is served."""
    tls = server.tls
    problem = _credential_problem(server, creds)
    if problem is not None:
        return problem
    if tls.get("tlsCertificates"):
        return "tlsCertificates (several certificates for one server) is not supported: one server per certificate"
    if server.protocol in HTTP_SERVER_PROTOCOLS:
        return None
    if server.protocol not in TLS_SERVER_PROTOCOLS:
        return f"protocol {server.protocol} is not served by a gateway here (HTTP, HTTP2, GRPC, HTTPS, TLS)"
    if server.mode == "AUTO_PASSTHROUGH":
        return "AUTO_PASSTHROUGH (SNI-DNAT to mesh services) is not supported"
    if server.protocol == "TLS" and server.mode in TERMINATING_MODES:
        return "a TLS server that terminates TLS needs VirtualService tcp routes, which gateways do not build yet"
    return None


def _file(path: str) -> base_pb2.DataSource:
    return base_pb2.DataSource(filename=path)


def server_socket(server: Server, creds: GatewayCredentials | None = None) -> base_pb2.TransportSocket:
    """The DownstreamTlsContext that terminates ``server``'s TLS (``creds``: the Secrets a
    ``credentialName`` may name; a server naming one is served by :func:`_usable` only when they
    hold it)."""
    tls = server.tls
    alpn = GATEWAY_ALPN if server.protocol == "HTTPS" else ()
    if server.mode == "ISTIO_MUTUAL":
        ts = downstream_socket()
        ctx = tls_pb2.DownstreamTlsContext()
        ts.typed_config.Unpack(ctx)
        ctx.common_tls_context.alpn_protocols.extend(alpn)
        ts.typed_config.Pack(ctx)
        return ts
    name = credential_name(server)
    cert = creds.cert(name) if creds is not None and name is not None else None
    if cert is not None and name is not None and creds is not None:
        common = tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[ads_secret(cert)], alpn_protocols=list(alpn)
        )
        ca = creds.ca(name)
        if ca is not None and server.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
            cvc = common.combined_validation_context
            cvc.default_validation_context.SetInParent()  # Envoy requires it, even empty (Istio's form)
            cvc.validation_context_sds_secret_config.CopyFrom(ads_secret(ca))
    else:
        common = tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=_file(str(tls.get("serverCertificate", ""))),
                    private_key=_file(str(tls.get("privateKey", ""))),
                )
            ],
            alpn_protocols=list(alpn),
        )
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    if cert is None and tls.get("caCertificates") and server.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        ctx.common_tls_context.validation_context.trusted_ca.CopyFrom(_file(str(tls["caCertificates"])))
    if server.mode == "MUTUAL":
        ctx.require_client_certificate.value = True
    ts = base_pb2.TransportSocket(name=_TLS)
    ts.typed_config.Pack(ctx)
    return ts


def _pack(message: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(message)
    return a


def _hcm(route_name: str, stat_prefix: str, edge: EdgeFilters = ([], [])) -> listener_components_pb2.Filter:
    before, after = edge
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_name),
        http_filters=[
            *before,
            cors_http_filter(),
            fault_http_filter(),
            *after,
            hcm_pb2.HttpFilter(name=_ROUTER, typed_config=_pack(_router())),
        ],
        upgrade_configs=[websocket_upgrade()],
    )
    return listener_components_pb2.Filter(name=_HCM, typed_config=_pack(hcm))


def _ads() -> Any:
    from envoy.config.core.v3 import config_source_pb2

    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _router() -> Any:
    from envoy.extensions.filters.http.router.v3 import router_pb2

    return router_pb2.Router()


def route_name(port: int, https: bool) -> str:
    return f"{'https' if https else 'http'}.{port}"


def _passthrough_chains(
    server: Server, vss: list[Resource], snap: PolicySnapshot | None, mesh: MeshModel, taken: set[str]
) -> list[listener_components_pb2.FilterChain]:
    """One chain per ``tls`` route of a bound VirtualService whose ``sniHosts`` the server serves."""
    if snap is None:
        return []
    out = []
    for vs in vss:
        names = gateway_names(server.gateway, vs.namespace)
        if not _namespace_ok(server, vs):
            continue
        dests = Destinations(snap, mesh, vs.namespace)
        for i, tls in enumerate(vs.spec.get("tls") or []):
            if not isinstance(tls, Mapping):
                continue
            sni: list[str] = []
            for m in tls.get("match") or []:
                if not isinstance(m, Mapping) or (m.get("port") and int(m["port"]) != server.port):
                    continue
                if m.get("gateways") and not names.intersection(m["gateways"]):
                    continue
                for n in m.get("sniHosts") or []:
                    n = str(n).lower()
                    if n not in taken and any(_host_matches(h, n) for _ns, h in server.hosts()):
                        sni.append(n)
            sni = list(dict.fromkeys(sni))
            chosen = weighted_destinations(tls.get("route") or [], dests, server.port) if sni else []
            if chosen:
                taken.update(sni)
                out.append(
                    listener_components_pb2.FilterChain(
                        filter_chain_match=listener_components_pb2.FilterChainMatch(server_names=sni),
                        filters=[tcp_proxy(f"{vs.namespace}.{vs.name}.tls.{i}", chosen)],
                    )
                )
    return out


def _namespace_ok(server: Server, vs: Resource) -> bool:
    return any(ns in ("*", vs.namespace) for ns, _h in server.hosts())


@dataclass(frozen=True, slots=True)
class _Inputs:
    snap: PolicySnapshot | None
    virtual_services: list[Resource]
    ports: dict[int, list[Server]]
    credentials: GatewayCredentials
    request_authentications: list[Resource]
    authorization_policies: list[Resource]


class _GatewayAware(PolicyAware):
    """Shared by the LDS and RDS halves: a gateway node's selected servers and the VirtualServices."""

    def scope(self, node: NodeInfo) -> Hashable:
        if not is_gateway(node):
            return None
        return node.id, Source.of(node.metadata), node.metadata.get(GATEWAY_ADDRESS_KEY), self.view(node)

    def inputs(self, mesh: MeshModel, node: NodeInfo) -> _Inputs | None:
        if not is_gateway(node) or self.policy is None:
            return None
        model = self.policy.policy
        return _Inputs(
            self.policy_snapshot(mesh, node),
            model.resources("VirtualService"),
            selected_servers(model.resources("Gateway"), node),
            credentials_for(model, node),
            model.resources("RequestAuthentication"),
            model.resources("AuthorizationPolicy"),
        )


class GatewayListenerGenerator(_GatewayAware):
    """LDS: a gateway node's listeners (module docstring)."""

    type_url = LISTENER
    jwks: JwksResolver | None = None

    def use_jwks(self, jwks: JwksResolver) -> None:
        """Pilot's fetcher of ``jwksUri`` keys, inlined for Envoy gateways as for Envoy sidecars."""
        self.jwks = jwks

    def _edge(self, node: NodeInfo, port: int, servers: list[Server], got: _Inputs) -> EdgeFilters:
        return edge_http_filters(
            node,
            node.user_agent.startswith("sofamesh"),
            port,
            [s.gateway for s in servers],
            got.request_authentications,
            got.authorization_policies,
            self.policy.trust_domain if self.policy is not None else DEFAULT_TRUST_DOMAIN,
            self.jwks.keys if self.jwks is not None else None,
        )

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        got = self.inputs(mesh, node)
        if got is None:
            return []
        snap, vss = got.snap, got.virtual_services
        out = []
        for port, servers in sorted(got.ports.items()):
            edge = self._edge(node, port, servers, got)
            chains: list[listener_components_pb2.FilterChain] = []
            taken: set[str] = set()
            plain = False
            for server in servers:
                why = _usable(server, got.credentials)
                if why is not None:
                    log.warning("%s (port %d) is left out: %s", server.ref, port, why)
                    continue
                if server.protocol in HTTP_SERVER_PROTOCOLS:
                    plain = True
                    continue
                if server.mode == "PASSTHROUGH":
                    chains += _passthrough_chains(
                        server, bound_virtual_services(vss, server.gateway), snap, mesh, taken
                    )
                    continue
                names = [n for n in server.names() if n not in taken]
                if server.names() and not names:
                    continue  # every name went to an earlier chain
                if not names and any(not c.filter_chain_match.server_names for c in chains):
                    continue  # one chain without names per port
                taken.update(names)
                chains.append(
                    listener_components_pb2.FilterChain(
                        filter_chain_match=listener_components_pb2.FilterChainMatch(server_names=names),
                        transport_socket=server_socket(server, got.credentials),
                        filters=[_hcm(route_name(port, True), f"https_{port}", edge)],
                    )
                )
            if plain and chains:
                log.warning("gateway port %d: plaintext and TLS servers on one port; the TLS ones are served", port)
            if plain and not chains:
                chains.append(
                    listener_components_pb2.FilterChain(filters=[_hcm(route_name(port, False), f"http_{port}", edge)])
                )
            if not chains:
                continue
            address = servers[0].bind
            name = f"{address}_{port}"
            listener = listener_pb2.Listener(
                name=name,
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port)),
                filter_chains=chains,
            )
            if any(len(c.filter_chain_match.server_names) for c in chains):
                listener.listener_filters.append(tls_inspector())
            out.append(XdsResource(name, listener))
        return out


class GatewayRouteGenerator(_GatewayAware):
    """RDS: ``http.PORT`` and ``https.PORT`` of a gateway node (module docstring)."""

    type_url = ROUTE

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        got = self.inputs(mesh, node)
        if got is None:
            return []
        source = Source.of(node.metadata)
        out = []
        for port, servers in sorted(got.ports.items()):
            by_kind: dict[bool, list[Server]] = {}
            for s in servers:
                if _usable(s, got.credentials) is None and (
                    s.protocol in HTTP_SERVER_PROTOCOLS or s.mode in TERMINATING_MODES
                ):
                    by_kind.setdefault(s.protocol not in HTTP_SERVER_PROTOCOLS, []).append(s)
            for https, group in sorted(by_kind.items()):
                hosts = self._virtual_hosts(group, got.virtual_services, got.snap, mesh, port, source)
                name = route_name(port, https)
                out.append(XdsResource(name, route_pb2.RouteConfiguration(name=name, virtual_hosts=hosts)))
        return out

    @staticmethod
    def _virtual_hosts(
        servers: list[Server],
        vss: list[Resource],
        snap: PolicySnapshot | None,
        mesh: MeshModel,
        port: int,
        source: Source,
    ) -> list[route_components_pb2.VirtualHost]:
        out: list[route_components_pb2.VirtualHost] = []
        used: set[str] = set()
        for server in servers:
            redirect = bool(server.tls.get("httpsRedirect")) and server.protocol in HTTP_SERVER_PROTOCOLS
            for vs in bound_virtual_services(vss, server.gateway):
                names = gateway_names(server.gateway, vs.namespace)
                routes = http_routes(vs, snap, mesh, port, source, gateways=names) if snap is not None else []
                for ns, shost in server.hosts():
                    if ns not in ("*", vs.namespace):
                        continue
                    for vhost in vs.spec.get("hosts") or []:
                        host = narrower(shost, str(vhost))
                        if host is None or host in used:
                            continue
                        used.add(host)
                        domains = [host] if host == "*" else [host, f"{host}:*"]
                        vh = route_components_pb2.VirtualHost(name=f"{host}:{port}", domains=domains, routes=routes)
                        if redirect:
                            vh.require_tls = route_components_pb2.VirtualHost.ALL
                        out.append(vh)
        return out


__all__ = [
    "GATEWAY_ADDRESS_KEY",
    "GATEWAY_NODE_PREFIX",
    "GatewayListenerGenerator",
    "GatewayRouteGenerator",
    "Server",
    "bound_virtual_services",
    "credential_name",
    "gateway_names",
    "is_gateway",
    "narrower",
    "selected_servers",
    "server_socket",
]


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    catalog.add("lds.gateway", GatewayListenerGenerator())
    catalog.add("rds.gateway", GatewayRouteGenerator())
