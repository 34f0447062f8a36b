"""Building: one proxy config -> the objects that serve it (catalogs, clusters, listener runtimes).

Runs plugin hooks (``sofamesh_configure``, the register hooks) and builds filters and balancers;
binds no socket and touches nothing that is serving, so a build that raises changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sofamesh.hookspecs as proxy_hookspecs
from sofamesh.core.codec import CodecFactory, CodecLimits
from sofamesh.core.config.check import Catalogs, build_balancer, build_filters, placement_errors, resolve
from sofamesh.core.config.model import StringMatch
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.plugin_host import DATA_PLANE_GROUP, PluginHost
from sofamesh.core.proxy.filter_chain import EMPTY_CHAIN, FilterChain
from sofamesh.core.proxy.router import Route, Router
from sofamesh.core.proxy.runtime import ListenerRuntime
from sofamesh.core.upstream.cluster import Cluster, link_local
from sofamesh.core.upstream.pool import http2_options, upstream_limits

if TYPE_CHECKING:
    import asyncio

    from sofamesh.core.config.model import ClusterConfig, ListenerConfig, ProxyConfig, RouteConfig


def proxy_host() -> PluginHost:
    """A plugin host over the ``sofamesh.plugins`` entry points with the data plane's hookspecs."""
    return PluginHost(DATA_PLANE_GROUP, proxy_hookspecs)


@dataclass(slots=True)
class Runtime:
    """What one config builds: catalogs, clusters by name, listener runtimes by listener name."""

    catalogs: Catalogs
    clusters: dict[str, Cluster]
    listeners: dict[str, ListenerRuntime]


def listener_name(i: int, lc: ListenerConfig) -> str:
    """A listener's name: its configured one, else ``listener<index>``."""
    return lc.name or f"listener{i}"


def build_runtime(config: ProxyConfig, host: PluginHost, loop: asyncio.AbstractEventLoop) -> Runtime:
    """Every object ``config`` needs; ``ConfigErrors`` naming every listener error at once."""
    host.pm.hook.sofamesh_configure(config=config)
    cats = resolve(config, host)
    clusters: dict[str, Cluster] = {}
    errors: list[ConfigError] = []
    for i, c in enumerate(config.clusters):
        try:
            clusters[c.name] = _build_cluster(i, c, cats, loop)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigErrors(errors)
    _zone_aware(config, clusters)
    runtimes: dict[str, ListenerRuntime] = {}
    for i, lc in enumerate(config.listeners):
        name = listener_name(i, lc)
        try:
            runtimes[name] = _build_listener(i, name, lc, cats, clusters)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    return Runtime(cats, clusters, runtimes)


def _zone_aware(config: ProxyConfig, clusters: dict[str, Cluster]) -> None:
    """Point each cluster with ``zone_aware_lb`` at the local cluster and the node's locality."""
    loc = config.node.locality  # the local cluster's name is checked with every other (``resolve``)
    link_local(clusters, config.cluster_manager.local_cluster_name, (loc.region, loc.zone, loc.sub_zone))


def _build_cluster(i: int, c: ClusterConfig, cats: Catalogs, loop: asyncio.AbstractEventLoop) -> Cluster:
    """One cluster: its balancer (with ``lb_config``), protocol and active health checks."""
    lb = build_balancer(cats, c.lb, c.lb_config, f"clusters[{i}]")
    proto = cats.protocols.get(c.protocol) if c.protocol else None
    cluster = Cluster(c, lb, proto, loop)
    if c.http_protocol is not None and proto is None:
        up = cats.protocols.get(c.http_protocol, f"clusters[{i}].http_protocol")
        cluster.http = {"http1": up, "http2": up}  # by the request's protocol
    if c.health_checks:
        # imported by the first cluster that checks its hosts: a sidecar without active checks does not load it
        from sofamesh.core.upstream.health_check import HealthChecker
    for k, hc in enumerate(c.health_checks):
        path = f"clusters[{i}].health_checks[{k}]"
        hf: CodecFactory | None = None
        if hc.http_health_check is not None:
            name = "http2" if hc.http_health_check.codec_client_type == "HTTP2" else "http1"
            hf = cats.protocols.get(name, f"{path}.http_health_check.codec_client_type")
        elif hc.grpc_health_check is not None:
            hf = cats.protocols.get("http2", f"{path}.grpc_health_check")
        elif hc.protocol_health_check is not None:
            name = hc.protocol_health_check.protocol or c.protocol or ""
            if not name:
                raise ConfigError(f"{path}.protocol_health_check.protocol",
                                  "the cluster has no protocol: name the one whose probe to send")
            hf = cats.protocols.get(name, f"{path}.protocol_health_check.protocol")
        cluster.add_checker(HealthChecker(cluster, hc, hf, upstream_limits(c)))
    return cluster


def _build_listener(i: int, name: str, lc: ListenerConfig, cats: Catalogs,
                    clusters: dict[str, Cluster]) -> ListenerRuntime:
    factories: list[CodecFactory]
    if lc.protocols == "auto":
        factories = [f for _, f in cats.protocols.items()]
    else:
        factories = [cats.protocols.get(p, f"listeners[{i}].protocols") for p in lc.protocols]
    passthrough = _passthrough_routes(lc)  # the model requires ``tcp`` among the protocols for them
    chain = FilterChain(build_filters(cats, list(lc.filters), f"listeners[{i}].filters"))
    protocols = {n: c.protocol.name if c.protocol is not None else None for n, c in clusters.items()}
    errors = [e for j, f in enumerate(chain.filters)
              for e in placement_errors(f, f"listeners[{i}].filters[{j}]", None, protocols)]
    routes = [Route(k, rc) for k, rc in enumerate(passthrough)]
    for k, rc in enumerate(lc.routes, len(passthrough)):
        rf = build_filters(cats, list(rc.filters), f"listeners[{i}].routes[{k}].filters") if rc.filters else []
        for j, f in enumerate(rf):
            errors += placement_errors(f, f"listeners[{i}].routes[{k}].filters[{j}]",
                                       [n for n in (rc.cluster, *(w.name for w in rc.weighted_clusters)) if n],
                                       protocols)
        routes.append(Route(k, rc, FilterChain(rf) if rf else EMPTY_CHAIN))
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    lim = lc.limits
    limits = CodecLimits(lim.max_frame_bytes, lim.max_header_bytes, lim.max_headers, lim.max_body_bytes,
                         frozenset(u.lower() for u in lc.upgrade_types), http2_options(lc.http2_protocol_options))
    return ListenerRuntime(name, factories, Router(routes), chain, clusters, limits,
                           max_connections=lc.max_connections)


def _passthrough_routes(lc: ListenerConfig) -> list[RouteConfig]:
    """The ``tls_servers`` that pass TLS through, as ``tcp`` routes by server name, ahead of the
    listener's own routes (a connection ``SniTls`` hands over is matched by its ClientHello again)."""
    out = []
    for server in lc.tls_servers:
        if server.passthrough is None:
            continue
        for name in server.server_names:
            host = StringMatch(suffix=name[1:]) if name.startswith("*.") else StringMatch(exact=name)
            match = server.passthrough.match.model_copy(update={"host": host, "protocol": "tcp"})
            out.append(server.passthrough.model_copy(update={
                "name": f"{server.passthrough.name or 'passthrough'}|{name}", "match": match}))
    return out


def plugin_rows(cats: Catalogs | None) -> list[dict[str, str]]:
    """Each plugin in ``cats``: name, kind, distribution, version."""
    rows: list[dict[str, str]] = []
    if cats is None:
        return rows
    for kind, cat in (("protocol", cats.protocols), ("filter", cats.filters), ("load_balancer", cats.load_balancers)):
        for name in cat:
            p = cat.provenance(name)
            rows.append({"name": name, "kind": kind, "distribution": p.distribution, "version": p.version})
    return rows


__all__ = ["Runtime", "build_runtime", "listener_name", "plugin_rows", "proxy_host"]
