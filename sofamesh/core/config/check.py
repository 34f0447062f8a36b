"""Resolve a config's plugin names against the catalogs; collect every error with its YAML path.

``resolve`` checks a validated ``ProxyConfig`` (start-up, reload, xDS); ``check_mapping`` checks a
config as written, in one pass: fields, names and each filter's own config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sofamesh.core.catalog import Catalog
from sofamesh.core.codec import CodecFactory
from sofamesh.core.config.loader import from_mapping
from sofamesh.core.config.model import ClusterConfig, FilterConfig, ProxyConfig
from sofamesh.core.errors import ConfigError, ConfigErrors, PluginError
from sofamesh.core.plugin_host import PluginHost
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory
from sofamesh.core.proxy.transcode import RouteTranscoder
from sofamesh.core.upstream.load_balancer import LoadBalancer, LoadBalancerFactory


@dataclass
class Catalogs:
    protocols: Catalog[CodecFactory]
    filters: Catalog[FilterFactory]
    load_balancers: Catalog[LoadBalancerFactory]

    @classmethod
    def build(cls, host: PluginHost) -> Catalogs:
        c = cls(Catalog("protocol"), Catalog("filter"), Catalog("load balancer"))
        host.fill("sofamesh_register_protocols", c.protocols)
        host.fill("sofamesh_register_filters", c.filters)
        host.fill("sofamesh_register_load_balancers", c.load_balancers)
        return c


_DEFAULT_LB: str = ClusterConfig.model_fields["lb"].default


# The checks below walk a config as a mapping: the one a user wrote (``check_mapping``, where any
# part may be malformed, so every value's type is checked before use) or a validated one dumped
# (``resolve``). One walk serves both, so a name is checked the same way before and after
# validation, and a field error elsewhere never hides a wrong name.
def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _protocols(listener: Mapping[str, Any]) -> Any:
    value = listener.get("protocols", "auto")
    return [value] if isinstance(value, str) and value != "auto" else value


def _filter_lists(data: Mapping[str, Any]) -> list[tuple[list[tuple[int, Any]], str, list[str] | None]]:
    """Each list of filters in the config (listener, then its routes'), with its YAML path and, for a
    route's, the clusters the route names."""
    out: list[tuple[list[tuple[int, Any]], str, list[str] | None]] = []
    for i, lst in _items(data.get("listeners")):
        out.append((_items(_mapping(lst).get("filters")), f"listeners[{i}].filters", None))
        for k, r in _items(_mapping(lst).get("routes")):
            r = _mapping(r)
            named = [r.get("cluster"), *(_mapping(w).get("name") for _, w in _items(r.get("weighted_clusters")))]
            out.append((_items(r.get("filters")), f"listeners[{i}].routes[{k}].filters",
                        [n for n in named if isinstance(n, str)]))
    return out


def placement_errors(f: Filter, path: str, route_clusters: list[str] | None,
                     protocols: Mapping[str, str | None]) -> list[ConfigError]:
    """Where a built filter may stand: a ``RouteTranscoder`` only among a route's filters, and only
    on a route whose clusters speak the protocol its calls are built in (``protocols``: cluster
    name -> its ``protocol``)."""
    if not isinstance(f, RouteTranscoder):
        return []
    if route_clusters is None:
        return [ConfigError(f"{path}.type", f"{f.name!r} answers a route with an RPC call: put it under a "
                                            "route's filters")]
    return [ConfigError(f"{path}.config.protocol",
                        f"the route's cluster {name!r} speaks {protocols[name] or 'the listener protocol'}, "
                        f"but the transcoder builds {f.protocol} calls")
            for name in route_clusters if name in protocols and protocols[name] != f.protocol]


def _names_used(data: Mapping[str, Any]) -> tuple[set[str], bool]:
    names: set[str] = {n for _, n in _items(data.get("plugins")) if isinstance(n, str)}
    names.update(k for k in _mapping(data.get("extensions")) if isinstance(k, str))
    auto = False
    for _, lst in _items(data.get("listeners")):
        protocols = _protocols(_mapping(lst))
        auto = auto or protocols == "auto"
        names.update(p for _, p in _items(protocols) if isinstance(p, str))
    for filters, _, _ in _filter_lists(data):
        names.update(t for _, f in filters if isinstance(t := _mapping(f).get("type"), str))
    for _, c in _items(data.get("clusters")):
        c = _mapping(c)
        names.update(n for n in (c.get("lb", _DEFAULT_LB), c.get("protocol"), c.get("http_protocol"))
                     if isinstance(n, str))
        names.update(_health_check_protocols(c))
    return names, auto


def _health_check_protocols(cluster: Mapping[str, Any]) -> set[str]:
    """The protocols a cluster's active health checks speak (HTTP/1 or /2, gRPC's HTTP/2, a probe's)."""
    out: set[str] = set()
    for _, hc in _items(cluster.get("health_checks")):
        hc = _mapping(hc)
        if "http_health_check" in hc:
            out.add("http2" if _mapping(hc["http_health_check"]).get("codec_client_type") == "HTTP2" else "http1")
        elif "grpc_health_check" in hc:
            out.add("http2")
        elif "protocol_health_check" in hc:
            name = _mapping(hc["protocol_health_check"]).get("protocol")
            if isinstance(name, str):
                out.add(name)
    return out


def _load(data: Mapping[str, Any], host: PluginHost) -> tuple[Catalogs, dict[str, Any]]:
    """Load exactly the plugins the config names (all of them for ``auto`` or on an unknown name)
    and build the catalogs. Returns them and every installed plugin."""
    names, auto = _names_used(data)
    available = host.available()
    if auto or not names <= set(available):
        host.load_all()
    else:
        host.load(sorted(names))
    return Catalogs.build(host), available


def _reference_errors(data: Mapping[str, Any], cats: Catalogs, available: Mapping[str, Any]) -> list[ConfigError]:
    errors: list[ConfigError] = []

    def check(cat: Catalog[Any], name: Any, path: str) -> None:
        if not isinstance(name, str):
            return  # a field error: from_mapping names it
        try:
            cat.get(name, path)
        except ConfigError as exc:
            errors.append(exc)

    installed = ", ".join(sorted(available)) or "none installed"
    for key, names in (("plugins", [n for _, n in _items(data.get("plugins"))]),
                       ("extensions", list(_mapping(data.get("extensions"))))):
        for name in names:
            if isinstance(name, str) and name not in available:
                errors.append(ConfigError(f"{key}.{name}", f"no installed plugin {name!r} (installed: {installed})"))
    clusters = [(i, _mapping(c)) for i, c in _items(data.get("clusters"))]
    cluster_names = [n for _, c in clusters if isinstance(n := c.get("name"), str)]
    seen: set[str] = set()
    for i, c in clusters:
        name = c.get("name")
        if isinstance(name, str):
            if name in seen:
                errors.append(ConfigError(f"clusters[{i}].name", f"duplicate cluster name {name!r}"))
            seen.add(name)
        check(cats.load_balancers, c.get("lb", _DEFAULT_LB), f"clusters[{i}].lb")
        if c.get("protocol"):
            check(cats.protocols, c["protocol"], f"clusters[{i}].protocol")
        elif c.get("http_protocol"):
            check(cats.protocols, c["http_protocol"], f"clusters[{i}].http_protocol")
    known_clusters = ", ".join(sorted(set(cluster_names))) or "none defined"

    def check_cluster(name: Any, path: str) -> None:
        if isinstance(name, str) and name not in cluster_names:
            errors.append(ConfigError(path, f"unknown cluster {name!r} (known: {known_clusters})"))

    local = _mapping(data.get("cluster_manager")).get("local_cluster_name")
    if local and not data.get("xds"):  # over xDS the local cluster may come with CDS
        check_cluster(local, "cluster_manager.local_cluster_name")
    seen_l: set[str] = set()
    seen_a: set[str] = set()
    for i, lst in _items(data.get("listeners")):
        lst = _mapping(lst)
        name = lst.get("name")
        lname = name if isinstance(name, str) and name else f"listener{i}"
        if lname in seen_l:
            errors.append(ConfigError(f"listeners[{i}].name", f"duplicate listener name {lname!r}"))
        seen_l.add(lname)
        address = lst.get("address")
        if isinstance(address, str):
            if address in seen_a:
                errors.append(ConfigError(f"listeners[{i}].address", f"address {address!r} is used twice"))
            seen_a.add(address)
        protocols = _protocols(lst)
        if protocols == []:
            errors.append(ConfigError(f"listeners[{i}].protocols", "empty list (give names or 'auto')"))
        for j, proto in _items(protocols):
            check(cats.protocols, proto, f"listeners[{i}].protocols[{j}]")
        for j, f in _items(lst.get("filters")):
            check(cats.filters, _mapping(f).get("type"), f"listeners[{i}].filters[{j}].type")
        for k, r in _items(lst.get("routes")):
            r, rp = _mapping(r), f"listeners[{i}].routes[{k}]"
            check_cluster(r.get("cluster"), f"{rp}.cluster")
            for m, w in _items(r.get("weighted_clusters")):
                check_cluster(_mapping(w).get("name"), f"{rp}.weighted_clusters[{m}].name")
            for j, f in _items(r.get("filters")):
                check(cats.filters, _mapping(f).get("type"), f"{rp}.filters[{j}].type")
            errors += _header_mutation_errors(r, rp, f"route{k}", protocols, cats)
    return errors


def _header_mutation_errors(route: Mapping[str, Any], path: str, default_name: str, protocols: Any,
                            cats: Catalogs) -> list[ConfigError]:
    """A route that adds / sets / removes headers may serve only protocols whose codec can
    (``CodecFactory.header_mutation``): the listener's, or its ``match.protocol``. The ``tcp``
    passthrough an ``auto`` listener falls back to routes nothing."""
    keys = [key for key in ("request_headers", "response_headers") if route.get(key) is not None]
    per_destination = [f"weighted_clusters[{m}].{key}" for m, w in _items(route.get("weighted_clusters"))
                       for key in ("request_headers", "response_headers") if _mapping(w).get(key) is not None]
    if not keys and not per_destination:
        return []
    only = _mapping(route.get("match")).get("protocol")
    if protocols == "auto":
        names = [n for n, f in cats.protocols.items() if not f.passthrough]
    else:
        names = [n for _, n in _items(protocols) if isinstance(n, str) and n in cats.protocols]
    for name in names:
        if per_destination and (only is None or name == only) and name not in ("http1", "http2"):
            label = route.get("name") or default_name
            return [ConfigError(f"{path}.{per_destination[0]}",
                                f"route {label!r}: a weighted destination's own headers apply to HTTP only, not "
                                f"to protocol {name!r}; limit the route to HTTP (match.protocol, or the listener's "
                                "protocols) or set the headers on the route")]
        if not keys:
            continue
        if (only is None or name == only) and not cats.protocols.get(name).header_mutation:
            label = route.get("name") or default_name
            return [ConfigError(f"{path}.{keys[0]}",
                                f"route {label!r}: protocol {name!r} cannot change the headers of its messages "
                                "(its codec has no header mutation); limit the route to protocols that can "
                                "(match.protocol, or the listener's protocols)")]
    return []


def resolve(config: ProxyConfig, host: PluginHost) -> Catalogs:
    """Load exactly the plugins the config names (all of them for ``auto`` or on an unknown name),
    build the catalogs and check every name. Raises ``ConfigErrors``."""
    data = config.model_dump()
    cats, available = _load(data, host)
    errors = _reference_errors(data, cats, available)
    if errors:
        raise ConfigErrors(errors)
    return cats


def _build_one(cats: Catalogs, fc: FilterConfig, path: str) -> Filter | list[ConfigError]:
    """One filter from its config, or the errors its factory found."""
    try:
        return cats.filters.get(fc.type, f"{path}.type").create(fc.config, path)
    except ConfigError as exc:
        return [exc]
    except ConfigErrors as exc:
        return list(exc.errors)
    except (PluginError, ValueError, TypeError) as exc:
        return [ConfigError(f"{path}.config", f"filter {fc.type!r} refused its config: {exc}")]


def build_filters(cats: Catalogs, configs: list[FilterConfig], path: str) -> list[Filter]:
    """Instantiate filters; every factory error comes back as one ``ConfigErrors``."""
    out: list[Filter] = []
    errors: list[ConfigError] = []
    for j, fc in enumerate(configs):
        built = _build_one(cats, fc, f"{path}[{j}]")
        if isinstance(built, list):
            errors.extend(built)
        else:
            out.append(built)
    if errors:
        raise ConfigErrors(errors)
    return out


def build_balancer(cats: Catalogs, name: str, config: Mapping[str, Any], path: str) -> LoadBalancer:
    """The balancer ``name`` with its ``lb_config`` (``path``: the cluster's); a factory's own
    errors become ``ConfigError`` at ``<path>.lb_config``."""
    factory = cats.load_balancers.get(name, f"{path}.lb")
    try:
        return factory.create(config) if config else factory.create()
    except ConfigError as exc:
        raise ConfigError(f"{path}.lb_config{'.' + exc.path if exc.path else ''}", exc.message) from None
    except ValidationError as exc:  # a factory validating with pydantic, as the built-in ones do
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{path}.lb_config{'.' + loc if loc else ''}",
                          f"{name}: {first['msg'].removeprefix('Value error, ')}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}.lb_config", f"{name}: {exc}") from None


def check_mapping(data: Mapping[str, Any], host: PluginHost) -> list[ConfigError]:
    """Every error in a config as written, in one pass (``sofamesh check-config``): its fields, the
    names it uses (plugins, protocols, filters, load balancers, clusters) and each filter's own
    config, each error once. A malformed part is skipped by the checks that need it, never the rest."""
    errors: list[ConfigError] = []
    try:
        from_mapping(data)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
    cats, available = _load(data, host)
    errors += _reference_errors(data, cats, available)
    protocols = {m["name"]: m.get("protocol") for m in (_mapping(c) for _, c in _items(data.get("clusters")))
                 if isinstance(m.get("name"), str)}
    for filters, where, route_clusters in _filter_lists(data):
        for j, raw in filters:
            try:
                fc = FilterConfig.model_validate(raw)
            except ValidationError:
                continue  # a field error, already reported
            if fc.type not in cats.filters:
                continue  # an unknown name, already reported
            built = _build_one(cats, fc, f"{where}[{j}]")
            if isinstance(built, list):
                errors.extend(built)
            else:
                errors += placement_errors(built, f"{where}[{j}]", route_clusters, protocols)
                built.close()
    for i, c in _items(data.get("clusters")):
        c = _mapping(c)
        lb, lb_config = c.get("lb", _DEFAULT_LB), c.get("lb_config")
        if isinstance(lb, str) and lb in cats.load_balancers and isinstance(lb_config, Mapping) and lb_config:
            try:
                build_balancer(cats, lb, lb_config, f"clusters[{i}]")
            except ConfigError as exc:
                errors.append(exc)
    unique: dict[str, ConfigError] = {}
    for e in errors:
        unique.setdefault(str(e), e)
    return list(unique.values())


__all__ = ["Catalogs", "build_balancer", "build_filters", "check_mapping", "placement_errors", "resolve"]
