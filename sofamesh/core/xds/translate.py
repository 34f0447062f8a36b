"""Envoy v3 resources -> the kernel's config model (docs/xds.md).

Pure functions: protobuf messages in, plain config mappings out, ``ConfigError`` naming the field
that cannot be translated. No sockets, no gRPC. The client NACKs with the error's text.

Translated:
- Listener with a socket address and one filter chain ending in ``http_connection_manager``
  (inline route config or RDS over ADS; ``http_filters`` must end with the router; optional
  filters are skipped; ``upgrade_configs`` as the listener's ``upgrade_types``; the settings and
  flood limits of ``http2_protocol_options``, as the cluster's below, with the connection manager's
  ``stream_error_on_invalid_http_message``, and its ``connection_keepalive``), ``tcp_proxy``
  (cluster or weighted clusters) or our own ``sofamesh.filters.network.rpc_proxy`` (a
  ``TypedStruct``, see ``RPC_PROXY_TYPE_URL``). A ``filter_chain_match`` that would pick only
  some connections is refused naming its field, except ``server_names`` on chains of one
  ``tcp_proxy`` each (TLS passthrough by SNI: routes matching ``host``), and on chains each
  terminating TLS in front of the same ``http_connection_manager`` (``tls_servers``).
  Listeners with an ``api_listener`` are for proxyless clients and are skipped.
- RouteConfiguration: virtual hosts (domains ``name``, ``name:*``, ``*.suffix``, ``prefix*``, ``*``),
  path prefix / exact / safe_regex (``case_sensitive``), header matchers (``:method``, ``:authority``,
  ``:scheme`` too; ``ignore_case``, ``treat_missing_header_as_empty``), query parameter matchers,
  cluster or weighted clusters (with their own header mutations), timeout; ``redirect`` and
  ``direct_response``; request / response headers to add and remove; ``prefix_rewrite``,
  ``regex_rewrite``, ``host_rewrite_literal``; ``request_mirror_policies``; the per-route config of
  ``envoy.filters.http.fault`` (delay and abort, with percentages) as the route's ``fault`` filter,
  and of ``envoy.filters.http.cors`` (a CorsPolicy) as its ``cors`` filter;
  ``retry_policy`` (the route's, else its virtual host's) with the virtual host's
  ``include_request_attempt_count`` and the route's ``per_request_buffer_limit_bytes``.
- Cluster of type EDS (endpoints from the ClusterLoadAssignment named by ``service_name`` or the
  cluster name) or STATIC / STRICT_DNS / LOGICAL_DNS with a ``load_assignment``; ``connect_timeout``;
  HTTP/2 upstream options select ``http2`` when that protocol is installed, without them HTTP
  requests go upstream as HTTP/1.1 (``http_protocol: http1``; ``use_downstream_protocol_config``
  keeps the request's own); ``circuit_breakers``
  (the DEFAULT priority's thresholds and retry budget), ``outlier_detection``,
  ``common_lb_config.healthy_panic_threshold``; balancing, health checks and connection limits
  through ``balancing.py`` (``lb_policy`` and its configs, locality weighting, ``health_checks``,
  ``max_requests_per_connection``, ``common_http_protocol_options``, ``http2_protocol_options``'s
  settings, flood limits, custom SETTINGS, answer to invalid messages and ``connection_keepalive``).
- ClusterLoadAssignment: every locality's endpoints with their priority, locality weight and health
  status (UNHEALTHY, DRAINING and TIMEOUT ones stay out of balancing), ``overprovisioning_factor``.
- Route ``hash_policy`` (``balancing.py``).
- TLS ``transport_socket`` of a listener's filter chain (DownstreamTlsContext) or of a cluster
  (UpstreamTlsContext): the certificate from SDS secret ``default`` and the trust bundle from
  ``ROOTCA`` (served by this process's agent, whatever ``sds_config`` says), or from files; a
  listener's may also name any secret fetched over ADS (``sds_config: {ads: {}}``: a gateway's
  ``credentialName``, ``secrets.py``): the listener warms until the secrets arrive, as in Envoy;
  ``require_client_certificate``; ALPN; a cluster's URI SAN matchers (``match_sans``: checked on
  every new upstream connection before a byte is sent).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message

from sofamesh.core.config.loader import from_mapping
from sofamesh.core.config.model import RETRY_ON, ProxyConfig
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.net.secrets import Secret
from sofamesh.core.xds.balancing import (
    Endpoints,
    connection_limits,
    endpoint_fields,
    hash_policies,
    health_checks,
    http2_options,
    keepalive,
    lb_policy,
    overprovisioning,
)
from sofamesh.core.xds.route_actions import (
    CORS_TYPE,
    FAULT_TYPE,
    cluster_weight_headers,
    route_action_extras,
    route_actions,
)
from sofamesh.core.xds.route_filters import FILTER_TYPE_URL, TYPED_STRUCT_TYPES, kernel_filter
from sofamesh.core.xds.secrets import SECRET_TYPE, translate_secret, uses_ads
from sofamesh.core.xds.unpack import struct_value, unpack

_T = "type.googleapis.com/"
LISTENER_TYPE = _T + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _T + "envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _T + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _T + "envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
SHORT = {LISTENER_TYPE: "lds", ROUTE_TYPE: "rds", CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", SECRET_TYPE: "sds"}
_ADS_SECRETS = "__sds__"  # a translated TLS mapping: the secrets it fetches over ADS (moved to TranslatedListener)

UNKNOWN_CLUSTER = "unknown cluster"
"""How an LDS / RDS update naming a cluster CDS has not sent is refused (``assemble``)."""

RPC_PROXY_FILTER = "sofamesh.filters.network.rpc_proxy"
RPC_PROXY_TYPE_URL = _T + "sofamesh.config.rpc.v1.RpcProxy"
"""The ``type_url`` inside the ``xds.type.v3.TypedStruct`` that carries Bolt / Dubbo listener config::

    {"protocol": "bolt",                       # a catalog name (bolt, dubbo, or a third party's)
     "stat_prefix": "outbound_bolt",           # optional
     "routes": [{"name": "echo",
                 "match": {"service": {"exact": "com.example.EchoService:1.0"},
                           "method": "echo", "version": "1.0", "group": "g1", "headers": {...}},
                 "cluster": "outbound|12200|com.example.EchoService:1.0",    # or weighted_clusters
                 "timeout_ms": 3000}]}
Match values are the kernel's string matches (a plain string, or one of exact/prefix/suffix/regex).
"""

# FILTER_TYPE_URL (route_filters.py): the type_url inside a TypedStruct that carries one kernel
# filter, {"type": "authz.rbac", "config": {...}}: an HTTP filter of an HCM, an entry of rpc_proxy's
# filters, or a route's own filter.

_TLS_SOCKET_TYPES = {"downstream": _T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                     "upstream": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}
_AGENT_SECRETS = {"cert": "default", "ca": "ROOTCA"}  # the SDS names the agent serves (Istio's)
_HCM_TYPE = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_TCP_TYPE = _T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_ROUTER_TYPE = _T + "envoy.extensions.filters.http.router.v3.Router"
_TYPED_STRUCTS = TYPED_STRUCT_TYPES
_DEFAULT_TIMEOUT_MS = 15_000


def _ms(d: Any) -> int:
    return int(d.seconds) * 1000 + int(d.nanos) // 1_000_000


def _unpack(any_msg: Any, cls: type[Message], path: str) -> Any:
    return unpack(any_msg, cls(), path)


def _string_match(m: Any, path: str) -> dict[str, Any]:
    """envoy.type.matcher.v3.StringMatcher -> the kernel's StringMatch mapping."""
    kind = m.WhichOneof("match_pattern")
    if kind in ("exact", "prefix", "suffix"):
        out: dict[str, Any] = {kind: getattr(m, kind)}
        if m.ignore_case:
            out["ignore_case"] = True
        return out
    if kind == "safe_regex":
        return {"regex": m.safe_regex.regex}
    raise ConfigError(path, f"string matcher {kind!r} is not supported (exact, prefix, suffix, safe_regex)")


def _header_match(h: Any, path: str) -> dict[str, Any]:
    kind = h.WhichOneof("header_match_specifier")
    out: dict[str, Any]
    if kind == "string_match":
        out = _string_match(h.string_match, f"{path}.string_match")
    elif kind in ("exact_match", "prefix_match", "suffix_match"):
        out = {kind.removesuffix("_match"): getattr(h, kind)}
    elif kind == "safe_regex_match":
        out = {"regex": h.safe_regex_match.regex}
    elif kind == "present_match":
        out = {"regex": ".*"}
        if not h.present_match:
            out["invert"] = True
    else:
        raise ConfigError(path, f"header matcher {kind!r} is not supported")
    if h.invert_match:
        out["invert"] = not out.get("invert", False)
    if h.treat_missing_header_as_empty and kind != "present_match":
        out["missing_as_empty"] = True
    return out


def _host_matches(domains: Iterable[str]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for d in domains:
        if d == "*":
            out.append(None)
        elif d.startswith("*"):
            out.append({"suffix": d[1:]})
        elif d.endswith("*"):
            out.append({"prefix": d[:-1]})
        else:
            out.append({"exact": d})
    return out


def _specificity(domain: str) -> int:
    return 3 if "*" not in domain else (1 if domain == "*" else 2)


def _sds_name(cfg: Any, kind: str, path: str, ads: list[str] | None = None) -> str:
    """The secret an ``SdsSecretConfig`` names: one of the agent's (``default``, ``ROOTCA``, whatever
    ``sds_config`` says), or (``ads`` given: a listener) any other name fetched over ADS, which is
    added to ``ads``."""
    if ads is not None and uses_ads(cfg) and cfg.name and cfg.name not in _AGENT_SECRETS.values():
        ads.append(cfg.name)
        return str(cfg.name)
    want = _AGENT_SECRETS[kind]
    if cfg.name != want:
        raise ConfigError(f"{path}.name", f"SDS secret {cfg.name!r} is not served here: this proxy's agent serves "
                                          f"'default' (certificate) and 'ROOTCA' (trust bundle); expected {want!r}")
    return str(cfg.name)


def _san_patterns(vc: Any, path: str) -> list[str]:
    """SAN matchers -> ``match_sans`` patterns (exact, or ``prefix*``), checked against the peer's URI
    SAN (its SPIFFE id) and its DNS SANs, so a typed matcher must be of type URI or DNS."""
    out: list[str] = []
    typed = [(f"{path}.match_typed_subject_alt_names[{i}]", m.san_type, m.matcher)
             for i, m in enumerate(vc.match_typed_subject_alt_names)]
    legacy = [(f"{path}.match_subject_alt_names[{i}]", None, m) for i, m in enumerate(vc.match_subject_alt_names)]
    for mpath, san_type, m in typed + legacy:
        if san_type is not None and san_type not in (2, 3):  # SubjectAltNameMatcher.DNS, URI
            raise ConfigError(f"{mpath}.san_type", "only URI (SPIFFE ids) and DNS SANs are checked")
        kind = m.WhichOneof("match_pattern")
        if kind not in ("exact", "prefix") or m.ignore_case:
            raise ConfigError(mpath, f"SAN matcher {kind!r} is not supported (exact, prefix; case-sensitive)")
        value = getattr(m, kind)
        out.append(value + "*" if kind == "prefix" else value)
    return out


def _validation(vc: Any, path: str, side: str) -> dict[str, Any]:
    """A CertificateValidationContext: ``trusted_ca`` (a file) and, for clusters, URI SAN matchers."""
    out: dict[str, Any] = {}
    for unsupported in ("verify_certificate_spki", "verify_certificate_hash"):
        if len(getattr(vc, unsupported)):
            raise ConfigError(f"{path}.{unsupported}", "certificate pinning is not supported")
    if len(vc.match_subject_alt_names) or len(vc.match_typed_subject_alt_names):
        if side == "downstream":
            raise ConfigError(f"{path}.match_subject_alt_names", "a listener does not check its clients' SANs "
                                                                 "in the TLS context; authz.rbac principals do")
        out["match_sans"] = _san_patterns(vc, path)
    if vc.HasField("trusted_ca"):
        if vc.trusted_ca.WhichOneof("specifier") != "filename":
            raise ConfigError(f"{path}.trusted_ca", "only a filename is supported (or SDS 'ROOTCA')")
        out["ca"] = vc.trusted_ca.filename
    return out


def translate_tls(ts: Any, side: str, path: str) -> dict[str, Any]:
    """A TLS ``transport_socket`` -> the kernel's ``tls`` mapping (``side``: downstream | upstream)."""
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    url = ts.typed_config.type_url
    if url != _TLS_SOCKET_TYPES[side]:
        raise ConfigError(f"{path}.typed_config", f"transport socket {ts.name!r} ({url or 'no typed_config'}) is "
                                                  f"not supported (only {_TLS_SOCKET_TYPES[side]})")
    cls = tls_pb2.DownstreamTlsContext if side == "downstream" else tls_pb2.UpstreamTlsContext
    ctx = _unpack(ts.typed_config, cls, f"{path}.typed_config")
    cpath = f"{path}.typed_config.common_tls_context"
    c = ctx.common_tls_context
    out: dict[str, Any] = {}
    ads: list[str] | None = [] if side == "downstream" else None
    sds = list(c.tls_certificate_sds_secret_configs)
    files = list(c.tls_certificates)
    client_only = side == "upstream" and not sds and not files  # TLS without a client certificate
    if len(sds) + len(files) != 1 and not client_only:
        raise ConfigError(cpath, "exactly one certificate is supported (tls_certificate_sds_secret_configs "
                                 f"'default', or tls_certificates), got {len(sds) + len(files)}")
    if side == "upstream" and ctx.sni:
        out["sni"] = ctx.sni
    if client_only:
        pass
    elif sds:
        out["secret"] = _sds_name(sds[0], "cert", f"{cpath}.tls_certificate_sds_secret_configs[0]", ads)
    else:
        tc = files[0]
        if tc.certificate_chain.WhichOneof("specifier") != "filename" or \
                tc.private_key.WhichOneof("specifier") != "filename":
            raise ConfigError(f"{cpath}.tls_certificates[0]", "only filenames are supported (or SDS 'default')")
        out["cert"], out["key"] = tc.certificate_chain.filename, tc.private_key.filename
    which = c.WhichOneof("validation_context_type")
    if which == "validation_context_sds_secret_config":
        out["ca_secret"] = _sds_name(c.validation_context_sds_secret_config, "ca",
                                     f"{cpath}.validation_context_sds_secret_config", ads)
    elif which == "combined_validation_context":
        cvc = c.combined_validation_context
        out.update(_validation(cvc.default_validation_context, f"{cpath}.combined_validation_context."
                                                              "default_validation_context", side))
        if out.pop("ca", None) is not None:
            raise ConfigError(f"{cpath}.combined_validation_context.default_validation_context.trusted_ca",
                              "give the trust bundle once (SDS 'ROOTCA')")
        out["ca_secret"] = _sds_name(cvc.validation_context_sds_secret_config, "ca",
                                     f"{cpath}.combined_validation_context.validation_context_sds_secret_config",
                                     ads)
    elif which == "validation_context":
        out.update(_validation(c.validation_context, f"{cpath}.validation_context", side))
    elif which is not None:
        raise ConfigError(f"{cpath}.{which}", "this validation context source is not supported "
                                              "(validation_context_sds_secret_config 'ROOTCA', "
                                              "combined_validation_context, validation_context)")
    if side == "downstream" and ctx.HasField("require_client_certificate"):
        out["require_client_cert"] = bool(ctx.require_client_certificate.value)
    if len(c.alpn_protocols):
        out["alpn"] = list(c.alpn_protocols)
    if ads:
        out[_ADS_SECRETS] = ads
    return out


def translate_route_configuration(rc: Any) -> list[dict[str, Any]]:
    """RouteConfiguration -> the kernel's ordered route list (first match wins)."""
    base = f"RouteConfiguration {rc.name!r}"
    out: list[dict[str, Any]] = []
    hosts: list[tuple[int, int, dict[str, Any] | None, Any, int]] = []
    for vi, vh in enumerate(rc.virtual_hosts):
        if not vh.domains:
            raise ConfigError(f"{base}: virtual_hosts[{vi}].domains", "at least one domain is required")
        for domain, host in zip(vh.domains, _host_matches(vh.domains), strict=True):
            hosts.append((-_specificity(domain), len(hosts), host, vh, vi))
    for _spec, _n, host, vh, vi in sorted(hosts, key=lambda t: (t[0], t[1])):
        if vh.require_tls:  # ALL / EXTERNAL_ONLY: a plaintext request is redirected to https (Envoy's 301)
            out.append({"name": f"{vh.name}/require_tls", "match": {"host": host} if host is not None else {},
                        "redirect": {"scheme": "https", "code": 301, "keep_port": True}})
            continue
        for ri, r in enumerate(vh.routes):
            out.append(_route(r, host, f"{base}: virtual_hosts[{vi}].routes[{ri}]", f"{vh.name}/{r.name or ri}", vh))
    return out


def _route(r: Any, host: dict[str, Any] | None, path: str, name: str, vh: Any) -> dict[str, Any]:
    m = r.match
    match: dict[str, Any] = {}
    if host is not None:
        match["host"] = host
    spec = m.WhichOneof("path_specifier")
    if spec == "prefix":
        if m.prefix not in ("", "/"):
            match["path"] = {"prefix": m.prefix}
    elif spec == "path":
        match["path"] = {"exact": m.path}
    elif spec == "safe_regex":
        match["path"] = {"regex": m.safe_regex.regex}
    elif spec is not None:
        raise ConfigError(f"{path}.match.{spec}", "this path matcher is not supported (prefix, path, safe_regex)")
    if m.HasField("case_sensitive") and not m.case_sensitive.value and spec in ("prefix", "path") and "path" in match:
        match["path"]["ignore_case"] = True  # as Envoy: case_sensitive does not apply to safe_regex
    query = {}
    for qi, q in enumerate(m.query_parameters):
        qpath = f"{path}.match.query_parameters[{qi}]"
        query[q.name] = _string_match(q.string_match, f"{qpath}.string_match") if q.HasField("string_match") \
            else {"regex": ".*"}
    if query:
        match["query"] = query
    headers = {}
    for hi, h in enumerate(m.headers):
        headers[h.name.lower()] = _header_match(h, f"{path}.match.headers[{hi}]")
    if headers:
        match["headers"] = headers
    out: dict[str, Any] = {"name": name, "match": match}
    route_actions(r, path, out)
    action = r.WhichOneof("action")
    if action in ("redirect", "direct_response"):
        return out
    if action != "route":
        raise ConfigError(f"{path}.{action}", f"route action {action!r} is not supported "
                                              "(route, redirect, direct_response)")
    ra = r.route
    which = ra.WhichOneof("cluster_specifier")
    if which == "cluster":
        out["cluster"] = ra.cluster
    elif which == "weighted_clusters":
        out["weighted_clusters"] = []
        for wi, w in enumerate(ra.weighted_clusters.clusters):
            wc: dict[str, Any] = {"name": w.name, "weight": w.weight.value if w.HasField("weight") else 1}
            cluster_weight_headers(w, f"{path}.route.weighted_clusters.clusters[{wi}]", wc)
            out["weighted_clusters"].append(wc)
    else:
        raise ConfigError(f"{path}.route.{which}", f"cluster specifier {which!r} is not supported "
                                                    "(cluster, weighted_clusters)")
    out["timeout_ms"] = _ms(ra.timeout) if ra.HasField("timeout") else _DEFAULT_TIMEOUT_MS
    route_action_extras(ra, f"{path}.route", out)
    if ra.HasField("retry_policy"):
        rp, rpath = ra.retry_policy, f"{path}.route.retry_policy"
    elif vh.HasField("retry_policy"):
        rp, rpath = vh.retry_policy, f"{path.split(': ')[0]}: virtual_host {vh.name!r}.retry_policy"
    else:
        rp = None
    if rp is not None:
        policy = _retry_policy(rp, rpath)
        policy["include_attempt_count"] = bool(vh.include_request_attempt_count)
        if r.HasField("per_request_buffer_limit_bytes"):
            policy["per_request_buffer_limit_bytes"] = r.per_request_buffer_limit_bytes.value
        elif vh.HasField("per_request_buffer_limit_bytes"):
            policy["per_request_buffer_limit_bytes"] = vh.per_request_buffer_limit_bytes.value
        out["retry_policy"] = policy
    if len(ra.hash_policy):
        out["hash_policy"] = hash_policies(ra.hash_policy, f"{path}.route.hash_policy")
    return out


_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_PREVIOUS_HOSTS_TYPE = _T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"


def _retry_policy(rp: Any, path: str) -> dict[str, Any]:
    """envoy.config.route.v3.RetryPolicy -> the kernel's ``retry_policy`` mapping."""
    on = [c.strip() for c in rp.retry_on.split(",") if c.strip()]
    for c in on:
        if c not in RETRY_ON:
            raise ConfigError(f"{path}.retry_on", f"retry condition {c!r} is not supported ({', '.join(RETRY_ON)})")
    out: dict[str, Any] = {"retry_on": on, "num_retries": rp.num_retries.value if rp.HasField("num_retries") else 1}
    if rp.HasField("per_try_timeout"):
        out["per_try_timeout_ms"] = _ms(rp.per_try_timeout)
    if len(rp.retriable_status_codes):
        out["retriable_status_codes"] = list(rp.retriable_status_codes)
    if rp.HasField("retry_back_off"):
        bo: dict[str, Any] = {"base_interval_ms": max(1, _ms(rp.retry_back_off.base_interval))}
        if rp.retry_back_off.HasField("max_interval"):
            bo["max_interval_ms"] = max(1, _ms(rp.retry_back_off.max_interval))
        out["retry_back_off"] = bo
    previous = False
    for i, pred in enumerate(rp.retry_host_predicate):
        if pred.name != _PREVIOUS_HOSTS and pred.typed_config.type_url != _PREVIOUS_HOSTS_TYPE:
            raise ConfigError(f"{path}.retry_host_predicate[{i}]",
                              f"retry host predicate {pred.name!r} is not supported (only {_PREVIOUS_HOSTS})")
        previous = True
    out["previous_hosts"] = previous
    for unsupported in ("retry_priority", "rate_limited_retry_back_off", "per_try_idle_timeout"):
        if rp.HasField(unsupported):
            raise ConfigError(f"{path}.{unsupported}", "is not supported")
    for unsupported in ("retriable_headers", "retriable_request_headers", "retry_options_predicates"):
        if len(getattr(rp, unsupported)):
            raise ConfigError(f"{path}.{unsupported}", "is not supported")
    return out


@dataclass
class TranslatedListener:
    """A listener mapping for the kernel; ``rds`` names the RouteConfiguration it still needs,
    ``sds`` the secrets it fetches over ADS."""

    config: dict[str, Any]
    rds: str | None = None
    sds: frozenset[str] = frozenset()


def translate_listener(lst: Any, protocols: Collection[str] = ("http1",)) -> TranslatedListener | None:
    """Listener -> kernel listener mapping, or ``None`` for an ``api_listener`` (proxyless clients)."""
    out = _translate_listener(lst, protocols)
    if out is None:
        return None
    tls_maps = [out.config.get("tls"), *(s.get("tls") for s in out.config.get("tls_servers") or [])]
    names: set[str] = set()
    for t in tls_maps:
        if isinstance(t, dict):
            names.update(t.pop(_ADS_SECRETS, ()))
    out.sds = frozenset(names)
    return out


def _translate_listener(lst: Any, protocols: Collection[str]) -> TranslatedListener | None:
    base = f"Listener {lst.name!r}"
    if lst.HasField("api_listener"):
        return None
    if lst.address.WhichOneof("address") != "socket_address":
        raise ConfigError(f"{base}: address", "only socket_address is supported")
    sa = lst.address.socket_address
    if sa.WhichOneof("port_specifier") != "port_value":
        raise ConfigError(f"{base}: address.socket_address.named_port", "only port_value is supported")
    host = sa.address or "0.0.0.0"
    address = f"[{host}]:{sa.port_value}" if ":" in host else f"{host}:{sa.port_value}"
    chains = list(lst.filter_chains)
    if any(len(c.filter_chain_match.server_names) for c in chains):
        if any(c.HasField("transport_socket") for c in chains):
            return _tls_servers(chains, base, {"name": lst.name, "address": address}, sa.port_value, protocols)
        return _by_server_name(chains, base, {"name": lst.name, "address": address}, sa.port_value)
    plaintext_too = len(chains) == 2 and _permissive(chains)
    if plaintext_too:
        chains = [c for c in chains if c.filter_chain_match.transport_protocol == "tls"]
    if len(chains) != 1:
        raise ConfigError(f"{base}: filter_chains", f"exactly one filter chain is supported (got {len(chains)}), "
                                                    "or Istio's PERMISSIVE pair (transport_protocol tls and "
                                                    "raw_buffer, the same filters)")
    _check_chain_match(chains[0], sa.port_value, plaintext_too, f"{base}: filter_chains[0].filter_chain_match")
    tls = translate_tls(chains[0].transport_socket, "downstream", f"{base}: filter_chains[0].transport_socket") \
        if chains[0].HasField("transport_socket") else None
    if tls is not None and plaintext_too:
        tls["plaintext"] = True
    filters = list(chains[0].filters)
    if not filters:
        raise ConfigError(f"{base}: filter_chains[0].filters", "no network filter")
    for fi, f in enumerate(filters[:-1]):
        raise ConfigError(f"{base}: filter_chains[0].filters[{fi}]",
                          f"network filter {f.name!r} is not supported before the terminal filter")
    f = filters[-1]
    fpath = f"{base}: filter_chains[0].filters[{len(filters) - 1}]"
    url = f.typed_config.type_url
    out: dict[str, Any] = {"name": lst.name, "address": address}
    if tls is not None:
        out["tls"] = tls
    if url == _HCM_TYPE:
        return _hcm(f, fpath, out, protocols)
    if url == _TCP_TYPE:
        out.update(protocols=["tcp"], routes=[_tcp_route(f, fpath)])
        return TranslatedListener(out)
    if url in _TYPED_STRUCTS:
        return _rpc_proxy(f, fpath, out)
    raise ConfigError(f"{fpath}.typed_config", f"network filter {f.name!r} ({url}) is not supported "
                                               "(http_connection_manager, tcp_proxy, " + RPC_PROXY_FILTER + ")")


def _tcp_route(f: Any, fpath: str) -> dict[str, Any]:
    """A ``tcp_proxy`` filter -> the route of a kernel ``tcp`` listener."""
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    tp = _unpack(f.typed_config, tcp_proxy_pb2.TcpProxy, f"{fpath}.typed_config")
    route: dict[str, Any] = {"name": tp.stat_prefix or "tcp"}
    if tp.WhichOneof("cluster_specifier") == "cluster":
        route["cluster"] = tp.cluster
    else:
        route["weighted_clusters"] = [{"name": w.name, "weight": w.weight} for w in tp.weighted_clusters.clusters]
    route["timeout_ms"] = 0
    return route


def _by_server_name(chains: list[Any], base: str, out: dict[str, Any], port: int) -> TranslatedListener:
    """Filter chains chosen by the TLS server name (``server_names``), each a plain ``tcp_proxy``
    (TLS passes through) -> a ``tcp`` listener whose routes match ``host`` against the ClientHello's
    SNI, in Envoy's order: exact names, then wildcards by longest suffix, then the chain without
    names (if any; a connection no chain takes is closed)."""
    ranked: list[tuple[int, int, int, dict[str, Any]]] = []
    for ci, chain in enumerate(chains):
        cpath = f"{base}: filter_chains[{ci}]"
        fcm = chain.filter_chain_match
        for fd, value in fcm.ListFields():
            if fd.name == "server_names" or (fd.name == "destination_port" and value.value == port):
                continue
            raise ConfigError(f"{cpath}.filter_chain_match.{fd.name}", "choosing a filter chain by this field is not "
                                                                      "supported (only server_names)")
        filters = list(chain.filters)
        if len(filters) != 1 or filters[0].typed_config.type_url != _TCP_TYPE:
            raise ConfigError(f"{cpath}.filters", "a chain chosen by server name must have one filter, tcp_proxy")
        route = _tcp_route(filters[0], f"{cpath}.filters[0]")
        names = list(fcm.server_names)
        if not names:
            ranked.append((2, 0, ci, route))
        for name in names:
            name = name.lower()
            match = {"suffix": name[1:]} if name.startswith("*.") else {"exact": name}
            if "*" in name and not name.startswith("*."):
                raise ConfigError(f"{cpath}.filter_chain_match.server_names", f"invalid server name {name!r}")
            ranked.append((1 if "exact" not in match else 0, -len(name), ci,
                           {**route, "name": f"{route['name']}|{name}", "match": {"host": match}}))
    out.update(protocols=["tcp"], routes=[r for *_rank, r in sorted(ranked, key=lambda t: t[:3])])
    return TranslatedListener(out)


def _tls_servers(chains: list[Any], base: str, out: dict[str, Any], port: int,
                 protocols: Collection[str]) -> TranslatedListener:
    """Filter chains chosen by the TLS server name, each terminating TLS with its own certificate in
    front of the same HTTP connection manager (an Istio gateway's servers on one port), or passing
    it through to a ``tcp_proxy`` (a PASSTHROUGH server) -> a listener with ``tls_servers`` and
    that HCM's routes."""
    servers: list[dict[str, Any]] = []
    first: bytes | None = None
    for ci, chain in enumerate(chains):
        cpath = f"{base}: filter_chains[{ci}]"
        fcm = chain.filter_chain_match
        for fd, value in fcm.ListFields():
            if fd.name == "server_names" or (fd.name == "destination_port" and value.value == port) or (
                    fd.name == "transport_protocol" and value == "tls"):
                continue
            raise ConfigError(f"{cpath}.filter_chain_match.{fd.name}", "choosing a filter chain by this field is not "
                                                                      "supported (only server_names)")
        filters = list(chain.filters)
        if not chain.HasField("transport_socket"):  # TLS passes through (a PASSTHROUGH server): tcp_proxy
            if len(filters) != 1 or filters[0].typed_config.type_url != _TCP_TYPE or not len(fcm.server_names):
                raise ConfigError(f"{cpath}.filters", "a chain without TLS next to chains terminating it must "
                                                      "choose by server_names and have one filter, tcp_proxy")
            servers.append({"server_names": _server_names(fcm, cpath),
                            "passthrough": _tcp_route(filters[0], f"{cpath}.filters[0]")})
            continue
        if len(filters) != 1 or filters[0].typed_config.type_url != _HCM_TYPE:
            raise ConfigError(f"{cpath}.filters", "a chain terminating TLS by server name must have one filter, "
                                                  "http_connection_manager")
        raw = filters[0].typed_config.SerializeToString(deterministic=True)
        if first is None:
            first = raw
        elif raw != first:
            raise ConfigError(f"{cpath}.filters[0]", "chains chosen by server name must share one "
                                                     "http_connection_manager (the same routes and filters)")
        servers.append({"server_names": _server_names(fcm, cpath),
                        "tls": translate_tls(chain.transport_socket, "downstream", f"{cpath}.transport_socket")})
    out["tls_servers"] = servers
    first_hcm = next(i for i, c in enumerate(chains) if c.HasField("transport_socket"))
    got = _hcm(chains[first_hcm].filters[0], f"{base}: filter_chains[{first_hcm}].filters[0]", out, protocols)
    if any("passthrough" in s for s in servers):
        got.config["protocols"] = [*got.config["protocols"], "tcp"]  # the passed-through connections
    return got


def _server_names(fcm: Any, cpath: str) -> list[str]:
    names = []
    for name in fcm.server_names:
        name = name.lower()
        if "*" in name and not name.startswith("*."):
            raise ConfigError(f"{cpath}.filter_chain_match.server_names", f"invalid server name {name!r}")
        names.append(name)
    return names


def _check_chain_match(chain: Any, port: int, permissive: bool, path: str) -> None:
    """The one filter chain serves every connection, so a ``filter_chain_match`` field that would
    pick some connections is refused by name (a ``destination_port`` equal to the listener's, the
    PERMISSIVE pair's ``transport_protocol``, and a ``transport_protocol`` its own transport socket
    implies select nothing)."""
    if not chain.HasField("filter_chain_match"):
        return
    fcm = chain.filter_chain_match
    for fd, value in fcm.ListFields():
        if fd.name == "destination_port" and value.value == port:
            continue
        if fd.name == "transport_protocol" and (permissive or value == (
                "tls" if chain.HasField("transport_socket") else "raw_buffer")):
            continue  # what the chain's own transport socket accepts anyway
        raise ConfigError(f"{path}.{fd.name}", "choosing a filter chain by this field is not supported "
                                               "(one filter chain serves every connection)")


def _permissive(chains: list[Any]) -> bool:
    """Istio's PERMISSIVE inbound listener: one chain for TLS (``transport_protocol: tls``, with a
    transport socket) and one for plaintext (``raw_buffer``), with the same filters. The kernel
    serves both on one listener (``tls.plaintext``: the first byte tells them apart)."""
    by = {c.filter_chain_match.transport_protocol: c for c in chains}
    if set(by) != {"tls", "raw_buffer"} or not by["tls"].HasField("transport_socket") or \
            by["raw_buffer"].HasField("transport_socket"):
        return False
    return [f.SerializeToString(deterministic=True) for f in by["tls"].filters] == \
        [f.SerializeToString(deterministic=True) for f in by["raw_buffer"].filters]


def _hcm(f: Any, fpath: str, out: dict[str, Any], protocols: Collection[str]) -> TranslatedListener:
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    hcm = _unpack(f.typed_config, hcm_pb2.HttpConnectionManager, f"{fpath}.typed_config")
    cpath = f"{fpath}.typed_config"
    filters = list(hcm.http_filters)
    if not filters or filters[-1].typed_config.type_url not in (_ROUTER_TYPE, ""):
        raise ConfigError(f"{cpath}.http_filters", "must end with envoy.filters.http.router")
    kernel_filters = []
    for hi, hf in enumerate(filters[:-1]):
        if hf.typed_config.type_url in _TYPED_STRUCTS:
            from xds.type.v3 import typed_struct_pb2

            ts = unpack(hf.typed_config, typed_struct_pb2.TypedStruct(), f"{cpath}.http_filters[{hi}].typed_config")
            if ts.type_url == FILTER_TYPE_URL:
                vpath = f"{cpath}.http_filters[{hi}].typed_config.value"
                kernel_filters.append(kernel_filter(struct_value(ts.value, vpath), vpath))
                continue
        if hf.typed_config.type_url == FAULT_TYPE:  # per-route fault configs become route filters
            if hf.typed_config.value:
                raise ConfigError(f"{cpath}.http_filters[{hi}].typed_config",
                                  "a listener-wide fault is not supported; configure it per route")
            continue
        if hf.typed_config.type_url == CORS_TYPE:  # the policies are per route (typed_per_filter_config)
            continue
        if not hf.is_optional:
            raise ConfigError(f"{cpath}.http_filters[{hi}]",
                              f"http filter {hf.name!r} ({hf.typed_config.type_url}) is not supported; "
                              "mark it is_optional to let this proxy skip it")
    if kernel_filters:
        out["filters"] = kernel_filters
    codec = hcm.codec_type  # AUTO=0 HTTP1=1 HTTP2=2
    if codec == 1:
        protos = ["http1"]
    elif codec == 2:
        protos = ["http2"]
    else:
        protos = [p for p in ("http1", "http2") if p in protocols] or ["http1"]
    out["protocols"] = protos
    upgrades = _upgrade_types(hcm, cpath)
    if upgrades:
        out["upgrade_types"] = upgrades
    hcm_stream_error = (hcm.stream_error_on_invalid_http_message.value
                        if hcm.HasField("stream_error_on_invalid_http_message") else None)
    if hcm.HasField("http2_protocol_options") or hcm_stream_error:
        h2 = http2_options(hcm.http2_protocol_options, f"{cpath}.http2_protocol_options", hcm_stream_error)
        if h2 is not None:
            out["http2_protocol_options"] = h2
        ka = keepalive(hcm.http2_protocol_options, f"{cpath}.http2_protocol_options.connection_keepalive",
                       upstream=False)
        if ka is not None:
            out["connection_keepalive"] = ka
    which = hcm.WhichOneof("route_specifier")
    if which == "route_config":
        out["routes"] = translate_route_configuration(hcm.route_config)
        return TranslatedListener(out)
    if which == "rds":
        src = hcm.rds.config_source
        if src.WhichOneof("config_source_specifier") not in ("ads", None):
            raise ConfigError(f"{cpath}.rds.config_source", "only ads config sources are supported")
        out["routes"] = []
        return TranslatedListener(out, rds=hcm.rds.route_config_name)
    raise ConfigError(f"{cpath}.{which}", f"route specifier {which!r} is not supported (route_config, rds)")


def _upgrade_types(hcm: Any, cpath: str) -> list[str]:
    """``upgrade_configs`` -> the listener's ``upgrade_types``: the enabled ones (``enabled``
    unset means enabled); an upgrade's own filter chain is refused."""
    out = []
    for ui, uc in enumerate(hcm.upgrade_configs):
        if len(uc.filters):
            raise ConfigError(f"{cpath}.upgrade_configs[{ui}].filters", "an upgrade's own filter chain is not "
                                                                         "supported (the HCM's filters run)")
        if uc.upgrade_type.lower() == "connect":
            raise ConfigError(f"{cpath}.upgrade_configs[{ui}].upgrade_type", "CONNECT is not supported")
        if not uc.HasField("enabled") or uc.enabled.value:
            out.append(uc.upgrade_type.lower())
    return out


def _rpc_proxy(f: Any, fpath: str, out: dict[str, Any]) -> TranslatedListener:
    from xds.type.v3 import typed_struct_pb2

    cpath = f"{fpath}.typed_config"
    ts = unpack(f.typed_config, typed_struct_pb2.TypedStruct(), cpath)
    if ts.type_url != RPC_PROXY_TYPE_URL:
        raise ConfigError(f"{cpath}.type_url", f"unknown typed struct {ts.type_url!r} (known: {RPC_PROXY_TYPE_URL})")
    value = struct_value(ts.value, f"{cpath}.value")
    unknown = set(value) - {"protocol", "stat_prefix", "routes", "filters"}
    if unknown:
        raise ConfigError(f"{cpath}.value.{sorted(unknown)[0]}", "unknown key")
    proto = value.get("protocol")
    if not isinstance(proto, str) or not proto:
        raise ConfigError(f"{cpath}.value.protocol", "required: the protocol's catalog name (bolt, dubbo, ...)")
    routes = value.get("routes", [])
    if not isinstance(routes, list):
        raise ConfigError(f"{cpath}.value.routes", "must be a list")
    fixed = []
    for r in routes:  # request_headers / response_headers: the codec edits header maps / attachments
        if isinstance(r, dict) and isinstance(r.get("timeout_ms"), float):
            r = {**r, "timeout_ms": int(r["timeout_ms"])}  # Struct numbers arrive as floats
        if isinstance(r, dict) and isinstance(r.get("weighted_clusters"), list):
            r = {**r, "weighted_clusters": [{**w, "weight": int(w["weight"])} if isinstance(w, dict) and
                                            isinstance(w.get("weight"), float) else w
                                            for w in r["weighted_clusters"]]}
        fixed.append(r)
    out.update(protocols=[proto], routes=fixed)
    filters = value.get("filters", [])
    if not isinstance(filters, list):
        raise ConfigError(f"{cpath}.value.filters", "must be a list")
    if filters:
        out["filters"] = [kernel_filter(x if isinstance(x, dict) else {}, f"{cpath}.value.filters[{i}]")
                          for i, x in enumerate(filters)]
    out["__path__"] = f"{cpath}.value"
    return TranslatedListener(out)


@dataclass
class TranslatedCluster:
    config: dict[str, Any]
    eds: str | None = None  # the ClusterLoadAssignment name it reads endpoints from


def translate_cluster(c: Any, protocols: Collection[str] = ()) -> TranslatedCluster:
    base = f"Cluster {c.name!r}"
    out: dict[str, Any] = {"name": c.name}
    lb_policy(c, base, out)
    if len(c.health_checks):
        out["health_checks"] = health_checks(c, base)
    if c.HasField("connect_timeout"):
        out["connect_timeout_ms"] = max(1, _ms(c.connect_timeout))
    if c.HasField("circuit_breakers"):
        cb = _circuit_breakers(c.circuit_breakers, f"{base}: circuit_breakers")
        if cb is not None:
            out["circuit_breakers"] = cb
    if c.HasField("outlier_detection"):
        out["outlier_detection"] = _outlier_detection(c.outlier_detection, f"{base}: outlier_detection")
    if c.HasField("common_lb_config") and c.common_lb_config.HasField("healthy_panic_threshold"):
        out["healthy_panic_threshold"] = c.common_lb_config.healthy_panic_threshold.value
    if c.HasField("transport_socket"):
        out["tls"] = translate_tls(c.transport_socket, "upstream", f"{base}: transport_socket")
    if len(c.transport_socket_matches):
        out["tls_matches"] = _socket_matches(c, base)
    http = connection_limits(c, base, out)
    if http is None:  # Envoy: HTTP/1.1 upstream unless the cluster asks for HTTP/2
        http = "http2" if c.HasField("http2_protocol_options") else "http1"
    rpc = _rpc_protocol(c)
    if rpc is not None and rpc in protocols:  # Pilot's RPC cluster: HTTP routes may call it (a transcoder)
        out["protocol"] = rpc
    elif http == "http2" and "http2" in protocols:
        out["protocol"] = "http2"
    elif http == "http1":  # HTTP requests only: an RPC cluster's requests keep their protocol
        out["http_protocol"] = "http1"
    which = c.WhichOneof("cluster_discovery_type")
    if which == "cluster_type":
        raise ConfigError(f"{base}: cluster_type", f"custom cluster type {c.cluster_type.name!r} is not supported")
    kind = c.type  # STATIC=0 STRICT_DNS=1 LOGICAL_DNS=2 EDS=3 ORIGINAL_DST=4
    if kind == 3:
        src = c.eds_cluster_config.eds_config
        if src.WhichOneof("config_source_specifier") not in ("ads", None):
            raise ConfigError(f"{base}: eds_cluster_config.eds_config", "only ads config sources are supported")
        out["endpoints"] = []
        return TranslatedCluster(out, eds=c.eds_cluster_config.service_name or c.name)
    if kind in (0, 1, 2):
        out["endpoints"] = translate_load_assignment(c.load_assignment, f"{base}: load_assignment")
        return TranslatedCluster(out)
    raise ConfigError(f"{base}: type", "ORIGINAL_DST clusters are not supported (STATIC, STRICT_DNS, "
                                       "LOGICAL_DNS, EDS)")


def _rpc_protocol(c: Any) -> str | None:
    """The protocol a Pilot RPC cluster names in ``metadata.filter_metadata.sofamesh.protocol``."""
    meta = c.metadata.filter_metadata.get("sofamesh") if c.HasField("metadata") else None
    value = meta.fields.get("protocol") if meta is not None else None
    return value.string_value or None if value is not None else None


def _circuit_breakers(cbs: Any, path: str) -> dict[str, Any] | None:
    """The DEFAULT priority's thresholds (requests of every route run at the default priority; HIGH
    thresholds have nothing to apply to and are ignored). None when there are none."""
    for t in cbs.thresholds:
        if t.priority != 0:
            continue
        out: dict[str, Any] = {}
        for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            if t.HasField(name):
                out[name] = getattr(t, name).value
        if t.HasField("retry_budget"):
            rb = t.retry_budget
            budget: dict[str, Any] = {}
            if rb.HasField("budget_percent"):
                budget["budget_percent"] = rb.budget_percent.value
            if rb.HasField("min_retry_concurrency"):
                budget["min_retry_concurrency"] = rb.min_retry_concurrency.value
            out["retry_budget"] = budget
        if len(cbs.per_host_thresholds):
            raise ConfigError(f"{path}.per_host_thresholds", "is not supported")
        return out
    return None


_OUTLIER_COUNTS = (
    "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure", "max_ejection_percent",
    "enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure", "enforcing_consecutive_local_origin_failure",
    "enforcing_success_rate", "success_rate_minimum_hosts", "success_rate_request_volume", "success_rate_stdev_factor",
    "enforcing_failure_percentage", "failure_percentage_threshold", "failure_percentage_minimum_hosts",
    "failure_percentage_request_volume",
)
_OUTLIER_TIMES = ("interval", "base_ejection_time", "max_ejection_time", "max_ejection_time_jitter")


def _outlier_detection(od: Any, path: str) -> dict[str, Any]:
    """envoy.config.cluster.v3.OutlierDetection -> the kernel's ``outlier_detection`` (unset fields
    keep Envoy's defaults, which are the kernel's)."""
    out: dict[str, Any] = {}
    for name in _OUTLIER_COUNTS:
        if od.HasField(name):
            out[name] = getattr(od, name).value
    for name in _OUTLIER_TIMES:
        if od.HasField(name):
            ms = _ms(getattr(od, name))
            out[f"{name}_ms"] = ms if name == "max_ejection_time_jitter" else max(1, ms)
    if len(od.monitors):
        raise ConfigError(f"{path}.monitors", "outlier detection monitors are not supported")
    if od.split_external_local_origin_errors:
        out["split_external_local_origin_errors"] = True
        for name in ("enforcing_local_origin_success_rate", "enforcing_failure_percentage_local_origin"):
            if od.HasField(name) and getattr(od, name).value:
                raise ConfigError(f"{path}.{name}", "local-origin success rate and failure percentage are not "
                                                    "supported; set it to 0")
    return out


_RAW_BUFFER = "envoy.transport_sockets.raw_buffer"
_SOCKET_MATCH = "envoy.transport_socket_match"  # EDS filter_metadata the matches read


def _socket_matches(c: Any, base: str) -> list[dict[str, Any]]:
    """``transport_socket_matches`` -> ``tls_matches``: string ``match`` values; a TLS socket, or
    ``raw_buffer`` (plaintext). EDS ``filter_metadata["envoy.transport_socket_match"]`` becomes the
    endpoint labels they match (``translate_load_assignment``)."""
    out = []
    for i, m in enumerate(c.transport_socket_matches):
        path = f"{base}: transport_socket_matches[{i}]"
        match = {}
        for k, v in m.match.fields.items():
            if v.WhichOneof("kind") != "string_value":
                raise ConfigError(f"{path}.match.{k}", "only string values are supported")
            match[k] = v.string_value
        entry: dict[str, Any] = {"name": m.name, "match": match}
        ts = m.transport_socket
        if ts.name != _RAW_BUFFER and not ts.typed_config.type_url.endswith(".RawBuffer"):
            entry["tls"] = translate_tls(ts, "upstream", f"{path}.transport_socket")
        out.append(entry)
    return out


def translate_load_assignment(cla: Any, base: str | None = None) -> list[dict[str, Any]]:
    base = base or f"ClusterLoadAssignment {cla.cluster_name!r}"
    out = Endpoints()
    for li, loc in enumerate(cla.endpoints):
        labels = {k: v for k, v in (("region", loc.locality.region), ("zone", loc.locality.zone),
                                    ("sub_zone", loc.locality.sub_zone)) if v}
        for ei, lbe in enumerate(loc.lb_endpoints):
            path = f"{base}: endpoints[{li}].lb_endpoints[{ei}]"
            if lbe.WhichOneof("host_identifier") != "endpoint":
                raise ConfigError(f"{path}.endpoint_name", "named endpoints are not supported")
            addr = lbe.endpoint.address
            if addr.WhichOneof("address") != "socket_address":
                raise ConfigError(f"{path}.endpoint.address", "only socket_address is supported")
            sa = addr.socket_address
            host = sa.address
            ep: dict[str, Any] = {"address": f"[{host}]:{sa.port_value}" if ":" in host else f"{host}:{sa.port_value}"}
            if lbe.HasField("load_balancing_weight"):
                ep["weight"] = min(max(lbe.load_balancing_weight.value, 1), 10_000)
            ep_labels = labels
            socket_match = lbe.metadata.filter_metadata.get(_SOCKET_MATCH) if lbe.HasField("metadata") else None
            if socket_match is not None:
                ep_labels = {**labels, **{k: v.string_value for k, v in socket_match.fields.items()
                                          if v.WhichOneof("kind") == "string_value"}}
            if ep_labels:
                ep["labels"] = ep_labels
            endpoint_fields(loc, lbe, ep)
            out.append(ep)
    return overprovisioning(cla, out)


@dataclass
class Translated:
    """Everything received so far, translated, keyed by resource name."""

    listeners: dict[str, TranslatedListener] = field(default_factory=dict)
    routes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    clusters: dict[str, TranslatedCluster] = field(default_factory=dict)
    endpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)

    def copy(self) -> Translated:
        return Translated(dict(self.listeners), dict(self.routes), dict(self.clusters), dict(self.endpoints),
                          dict(self.secrets))

    def sds_names(self) -> set[str]:
        return {n for t in self.listeners.values() for n in t.sds}

    def rds_names(self) -> set[str]:
        return {t.rds for t in self.listeners.values() if t.rds is not None}

    def eds_names(self) -> set[str]:
        return {t.eds for t in self.clusters.values() if t.eds is not None}


def translate(type_url: str, message: Any, protocols: Collection[str]) -> Any:
    """One resource of ``type_url`` -> its translated form (raises ``ConfigError``)."""
    if type_url == LISTENER_TYPE:
        return translate_listener(message, protocols)
    if type_url == ROUTE_TYPE:
        return translate_route_configuration(message)
    if type_url == CLUSTER_TYPE:
        return translate_cluster(message, protocols)
    if type_url == ENDPOINT_TYPE:
        return translate_load_assignment(message)
    if type_url == SECRET_TYPE:
        return translate_secret(message)
    raise ConfigError(type_url, "this resource type is not supported")


def message_class(type_url: str) -> type[Message]:
    if type_url == LISTENER_TYPE:
        from envoy.config.listener.v3 import listener_pb2

        return listener_pb2.Listener  # type: ignore[no-any-return]
    if type_url == ROUTE_TYPE:
        from envoy.config.route.v3 import route_pb2

        return route_pb2.RouteConfiguration  # type: ignore[no-any-return]
    if type_url == CLUSTER_TYPE:
        from envoy.config.cluster.v3 import cluster_pb2

        return cluster_pb2.Cluster  # type: ignore[no-any-return]
    if type_url == ENDPOINT_TYPE:
        from envoy.config.endpoint.v3 import endpoint_pb2

        return endpoint_pb2.ClusterLoadAssignment  # type: ignore[no-any-return]
    if type_url == SECRET_TYPE:
        from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

        return secret_pb2.Secret  # type: ignore[no-any-return]
    raise ConfigError(type_url, "this resource type is not supported")


def decode(type_url: str, any_msg: Any) -> Any:
    cls = message_class(type_url)
    if any_msg.type_url != type_url:
        raise ConfigError(type_url, f"a resource of type {any_msg.type_url} arrived on the {type_url} stream")
    msg = cls()
    try:
        msg.ParseFromString(any_msg.value)
    except DecodeError as exc:
        raise ConfigError(type_url, f"cannot decode a resource: {exc}") from None
    return msg


def assemble(base: ProxyConfig, state: Translated, check_route_clusters: bool) -> ProxyConfig:
    """The bootstrap config plus everything translated -> one validated ProxyConfig.

    A listener whose RDS route config, or a secret it fetches over ADS, has not arrived yet is left
    out (it warms, as in Envoy).
    A route naming a cluster that is neither static nor received is an error naming the route with
    ``check_route_clusters`` (a new LDS/RDS update); otherwise (CDS removed the cluster, or has not
    arrived yet) the cluster is kept with no endpoints, so only its own requests fail, each with
    its protocol's "no healthy upstream" reply.
    """
    data: dict[str, Any] = base.model_dump(mode="json", exclude_none=True)
    data.pop("xds", None)
    if base.xds is not None:
        data["xds"] = base.xds.model_dump(mode="json")
    listeners: list[dict[str, Any]] = list(data.get("listeners", []))
    clusters: list[dict[str, Any]] = list(data.get("clusters", []))
    known_clusters = {c["name"] for c in clusters}
    for name in sorted(state.clusters):
        tc = state.clusters[name]
        c = dict(tc.config)
        if tc.eds is not None:
            eps = c["endpoints"] = state.endpoints.get(tc.eds, [])
            factor = getattr(eps, "overprovisioning_factor", None)
            if factor is not None:
                c["overprovisioning_factor"] = factor
        clusters.append(c)
        known_clusters.add(name)
    paths: dict[int, str] = {}
    for name in sorted(state.listeners):
        tl = state.listeners[name]
        lc = dict(tl.config)
        origin = lc.pop("__path__", None) or f"Listener {name!r}"
        if not tl.sds <= state.secrets.keys():
            continue
        if tl.rds is not None:
            routes = state.routes.get(tl.rds)
            if routes is None:
                continue
            lc["routes"] = routes
            origin = f"RouteConfiguration {tl.rds!r}"
        paths[len(listeners)] = origin
        listeners.append(lc)
    errors = []
    for i, lc in enumerate(listeners):
        for r in _items(lc.get("routes")):  # an RPC proxy's routes are JSON as sent: from_mapping names what is wrong
            weighted = _items(r.get("weighted_clusters"))
            names = [r["cluster"]] if r.get("cluster") else [w.get("name") for w in weighted]
            for cname in names:
                if not isinstance(cname, str) or cname in known_clusters:
                    continue
                if check_route_clusters:
                    errors.append(ConfigError(f"{paths.get(i, f'listeners[{i}]')}: route {r.get('name')!r}",
                                              f"{UNKNOWN_CLUSTER} {cname!r}"))
                else:  # removed by CDS, or not received yet: its requests get "no healthy upstream"
                    clusters.append({"name": cname, "endpoints": []})
                    known_clusters.add(cname)
    if errors:
        raise ConfigErrors(errors)
    data["listeners"] = listeners
    data["clusters"] = clusters
    try:
        return from_mapping(data)
    except ConfigErrors as exc:
        raise ConfigErrors([ConfigError(_where(e.path, listeners, paths), e.message) for e in exc.errors]) from None


def _items(value: Any) -> list[Mapping[str, Any]]:
    """The objects of a list (anything else: none)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _where(path: str, listeners: list[dict[str, Any]], paths: Mapping[int, str]) -> str:
    """``listeners[3].routes[0].match`` -> ``<the xDS resource>: listeners[3].routes[0].match``."""
    if path.startswith("listeners["):
        idx = int(path[len("listeners["):path.index("]")])
        if idx in paths:
            return f"{paths[idx]}: {path}"
    return path


__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "FILTER_TYPE_URL",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "RPC_PROXY_FILTER",
    "RPC_PROXY_TYPE_URL",
    "SECRET_TYPE",
    "TYPE_ORDER",
    "UNKNOWN_CLUSTER",
    "Translated",
    "TranslatedCluster",
    "TranslatedListener",
    "assemble",
    "decode",
    "translate",
    "translate_cluster",
    "translate_listener",
    "translate_load_assignment",
    "translate_route_configuration",
    "translate_tls",
]
