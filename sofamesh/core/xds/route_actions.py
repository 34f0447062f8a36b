"""Envoy route fields beyond the match and the cluster -> the kernel's route actions (docs/xds.md):
redirect, direct response, header mutation, rewrites, mirroring, per-route fault injection; and the
upstream HTTP protocol options of a cluster. Pure: messages in, mappings out, ``ConfigError`` naming
the field the sidecar cannot enforce (the client NACKs with it)."""

from __future__ import annotations

from typing import Any

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.errors import ConfigError
from sofamesh.core.xds.route_filters import FILTER_CONFIG_TYPE, TYPED_STRUCT_TYPES, route_filter
from sofamesh.core.xds.unpack import unpack

_T = "type.googleapis.com/"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = _T + "envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS_FILTER = "envoy.filters.http.cors"
CORS_TYPE = _T + "envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY_TYPE = _T + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
_PERCENT_SCALE = {0: 1.0, 1: 0.01, 2: 0.0001}  # FractionalPercent HUNDRED, TEN_THOUSAND, MILLION -> percent
_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_SET, _ADD = 2, 0  # HeaderValueOption OVERWRITE_IF_EXISTS_OR_ADD, APPEND_IF_EXISTS_OR_ADD


def _ms(d: Any) -> int:
    return int(d.seconds) * 1000 + int(d.nanos) // 1_000_000


def percent(fp: Any) -> float:
    """envoy.type.v3.FractionalPercent -> 0..100."""
    return min(100.0, float(fp.numerator) * _PERCENT_SCALE.get(fp.denominator, 1.0))


def _mutation(to_add: Any, to_remove: Any, path: str, what: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {"set": {}, "add": {}, "remove": list(to_remove)}
    for i, hvo in enumerate(to_add):
        if hvo.HasField("append"):
            kind = "add" if hvo.append.value else "set"
        elif hvo.append_action in (_SET, _ADD):
            kind = "set" if hvo.append_action == _SET else "add"
        else:
            raise ConfigError(f"{path}.{what}_headers_to_add[{i}].append_action",
                              "only OVERWRITE_IF_EXISTS_OR_ADD and APPEND_IF_EXISTS_OR_ADD are supported")
        value = hvo.header.value or hvo.header.raw_value.decode("latin-1")
        if "%" in value:
            raise ConfigError(f"{path}.{what}_headers_to_add[{i}].header.value",
                              "header values with %VARIABLES% are not supported")
        out[kind][hvo.header.key] = value
    return {k: v for k, v in out.items() if v} or None


def _mutations(msg: Any, path: str, out: dict[str, Any]) -> None:
    """The request / response header mutations of a Route or a ClusterWeight into ``out``."""
    for what in ("request", "response"):
        edit = _mutation(getattr(msg, f"{what}_headers_to_add"), getattr(msg, f"{what}_headers_to_remove"), path,
                         what)
        if edit:
            out[f"{what}_headers"] = edit


def _fault(cfg: Any, path: str) -> dict[str, Any]:
    from envoy.extensions.filters.http.fault.v3 import fault_pb2

    fault = unpack(cfg, fault_pb2.HTTPFault(), path)
    out: dict[str, Any] = {}
    if fault.HasField("delay"):
        d = fault.delay
        if d.WhichOneof("fault_delay_secifier") != "fixed_delay":
            raise ConfigError(f"{path}.delay.header_delay", "only fixed_delay is supported")
        out["delay"] = {"fixed_delay_ms": max(1, _ms(d.fixed_delay)), "percentage": percent(d.percentage)}
    if fault.HasField("abort"):
        a = fault.abort
        kind = a.WhichOneof("error_type")
        if kind == "http_status":
            status: int | str = a.http_status
        elif kind == "grpc_status":
            found = [s.name for s in ReplyStatus if s.grpc_status == a.grpc_status]
            if not found:
                raise ConfigError(f"{path}.abort.grpc_status", f"gRPC status {a.grpc_status} cannot be answered "
                                  f"(known: {sorted({s.grpc_status for s in ReplyStatus})})")
            status = found[0]
        else:
            raise ConfigError(f"{path}.abort.{kind}", "only http_status and grpc_status aborts are supported")
        out["abort"] = {"status": status, "percentage": percent(a.percentage)}
    for name in ("max_active_faults", "response_rate_limit", "downstream_nodes", "headers"):
        if fault.HasField(name) if name in ("max_active_faults", "response_rate_limit") else len(getattr(fault, name)):
            raise ConfigError(f"{path}.{name}", "is not supported")
    return out


def _cors(cfg: Any, path: str) -> dict[str, Any]:
    """A route's CorsPolicy -> the ``cors`` filter's config; a runtime-scaled or shadow policy is NACKed."""
    from envoy.extensions.filters.http.cors.v3 import cors_pb2

    policy = unpack(cfg, cors_pb2.CorsPolicy(), path)
    if policy.HasField("filter_enabled") and percent(policy.filter_enabled.default_value) < 100.0:
        raise ConfigError(f"{path}.filter_enabled", "only a policy enabled for every request (100 %) is supported")
    if policy.HasField("shadow_enabled") and percent(policy.shadow_enabled.default_value) > 0.0:
        raise ConfigError(f"{path}.shadow_enabled", "shadow mode is not supported")
    out: dict[str, Any] = {}
    origins = []
    for i, m in enumerate(policy.allow_origin_string_match):
        kind = m.WhichOneof("match_pattern")
        if kind in ("exact", "prefix", "suffix"):
            origin: dict[str, Any] = {kind: getattr(m, kind)}
            if m.ignore_case:
                origin["ignore_case"] = True
        elif kind == "safe_regex":
            origin = {"regex": m.safe_regex.regex}
        else:
            raise ConfigError(f"{path}.allow_origin_string_match[{i}]",
                              f"string matcher {kind!r} is not supported (exact, prefix, suffix, safe_regex)")
        origins.append(origin)
    if origins:
        out["allow_origins"] = origins
    for name in ("allow_methods", "allow_headers", "expose_headers", "max_age"):
        if getattr(policy, name):
            out[name] = getattr(policy, name)
    for name in ("allow_credentials", "allow_private_network_access", "forward_not_matching_preflights"):
        if policy.HasField(name):
            out[name] = bool(getattr(policy, name).value)
    return out


def route_actions(r: Any, path: str, out: dict[str, Any]) -> None:
    """The route-level fields of ``r`` (envoy.config.route.v3.Route) into ``out``."""
    action = r.WhichOneof("action")
    if action == "redirect":
        rd = r.redirect
        red: dict[str, Any] = {"code": _REDIRECT_CODES.get(rd.response_code, 301)}
        if rd.scheme_redirect or rd.https_redirect:
            red["scheme"] = rd.scheme_redirect or "https"
        if rd.host_redirect:
            red["host"] = rd.host_redirect
        if rd.port_redirect:
            red["port"] = rd.port_redirect
        if rd.path_redirect:
            red["path"] = rd.path_redirect
        elif rd.prefix_rewrite:
            red["prefix"] = rd.prefix_rewrite
        elif rd.HasField("regex_rewrite"):
            raise ConfigError(f"{path}.redirect.regex_rewrite", "is not supported")
        if rd.strip_query:
            red["strip_query"] = True
        out["redirect"] = red
    elif action == "direct_response":
        dr = r.direct_response
        body = dr.body.WhichOneof("specifier") if dr.HasField("body") else None
        if body not in (None, "inline_string", "inline_bytes"):
            raise ConfigError(f"{path}.direct_response.body.{body}", "only inline bodies are supported")
        text = dr.body.inline_string if body == "inline_string" else \
            dr.body.inline_bytes.decode("latin-1") if body == "inline_bytes" else ""
        out["direct_response"] = {"status": dr.status, "body": text}
    _mutations(r, path, out)
    for name, cfg in sorted(r.typed_per_filter_config.items()):
        fpath = f"{path}.typed_per_filter_config[{name}]"
        if cfg.type_url == FILTER_CONFIG_TYPE or cfg.type_url in TYPED_STRUCT_TYPES:  # a route's own filter
            entry = route_filter(cfg, fpath)
            if entry is not None:
                out.setdefault("filters", []).append(entry)
            continue
        if cfg.type_url == CORS_POLICY_TYPE:
            out.setdefault("filters", []).append({"type": "cors", "config": _cors(cfg, fpath)})
            continue
        if name != FAULT_FILTER and cfg.type_url != FAULT_TYPE:
            raise ConfigError(fpath, f"per-route config of {name!r} is not supported (only {FAULT_FILTER}, "
                                     f"{CORS_FILTER})")
        fault = _fault(cfg, fpath)
        if fault:
            out.setdefault("filters", []).append({"type": "fault", "config": fault})


def route_action_extras(ra: Any, path: str, out: dict[str, Any]) -> None:
    """Rewrites and mirrors of ``ra`` (a RouteAction) into ``out``; NACK what the kernel cannot do."""
    rewrite: dict[str, Any] = {}
    if ra.prefix_rewrite:
        rewrite["prefix"] = ra.prefix_rewrite
    if ra.HasField("regex_rewrite"):
        rewrite["regex"] = ra.regex_rewrite.pattern.regex
        rewrite["substitution"] = ra.regex_rewrite.substitution
    if ra.host_rewrite_literal:
        rewrite["host"] = ra.host_rewrite_literal
    for name in ("host_rewrite_header", "auto_host_rewrite", "host_rewrite_path_regex", "path_rewrite_policy"):
        if ra.HasField(name) if name != "host_rewrite_header" else getattr(ra, name):
            raise ConfigError(f"{path}.{name}", "is not supported (prefix_rewrite, regex_rewrite, "
                                                "host_rewrite_literal)")
    if rewrite:
        out["rewrite"] = rewrite
    if len(ra.upgrade_configs):
        raise ConfigError(f"{path}.upgrade_configs", "per-route upgrades are not supported: give the http_"
                                                     "connection_manager's upgrade_configs (listener upgrade_types)")
    mirrors = []
    for i, m in enumerate(ra.request_mirror_policies):
        if m.cluster_header or not m.cluster:
            raise ConfigError(f"{path}.request_mirror_policies[{i}].cluster_header", "only cluster is supported")
        if m.disable_shadow_host_suffix_append:
            raise ConfigError(f"{path}.request_mirror_policies[{i}].disable_shadow_host_suffix_append",
                              "is not supported: copies always get the -shadow host suffix")
        share = percent(m.runtime_fraction.default_value) if m.HasField("runtime_fraction") else 100.0
        mirrors.append({"cluster": m.cluster, "percentage": share})
    if mirrors:
        out["mirror"] = mirrors


def cluster_weight_headers(w: Any, path: str, out: dict[str, Any]) -> None:
    """A ClusterWeight's own request / response header mutations into ``out`` (a weighted cluster)."""
    _mutations(w, path, out)
    for name in ("typed_per_filter_config", "host_rewrite_literal", "cluster_header"):
        if len(getattr(w, name)):
            raise ConfigError(f"{path}.{name}", "is not supported on a weighted cluster")
    if w.HasField("metadata_match"):
        raise ConfigError(f"{path}.metadata_match", "is not supported on a weighted cluster")


__all__ = ["CORS_FILTER", "CORS_POLICY_TYPE", "CORS_TYPE", "FAULT_FILTER", "FAULT_TYPE", "cluster_weight_headers",
           "percent", "route_action_extras", "route_actions"]
