"""Envoy v3 balancing, health checking and connection-limit fields -> the kernel's config
(docs/xds.md). Pure functions, as ``translate.py``: protobuf messages in, mappings out,
``ConfigError`` naming the field that cannot be translated.

- Cluster ``lb_policy`` ROUND_ROBIN / LEAST_REQUEST / RANDOM / RING_HASH / MAGLEV with
  ``round_robin_lb_config`` / ``least_request_lb_config`` (choice_count, active_request_bias,
  slow_start_config) / ``ring_hash_lb_config`` / ``maglev_lb_config``;
- ``common_lb_config``: ``locality_weighted_lb_config``; ``zone_aware_lb_config`` (routing_enabled,
  min_cluster_size, fail_traffic_on_panic; it acts with the bootstrap's
  ``cluster_manager.local_cluster_name`` and ``node.locality``);
- ``health_checks`` (one): HTTP, TCP and gRPC checks with their timing and thresholds;
- ``max_requests_per_connection`` and ``common_http_protocol_options`` (``idle_timeout``,
  ``max_connection_duration``, ``max_requests_per_connection``), on the cluster or in its
  ``HttpProtocolOptions``;
- ``http2_protocol_options`` (settings and flood limits, ``H2_LIMITS``; custom SETTINGS; the answer
  to an invalid HTTP message; ``connection_keepalive``) of a cluster, of its ``HttpProtocolOptions``
  and of an ``http_connection_manager``;
- ClusterLoadAssignment priorities, locality weights, endpoint health status and
  ``policy.overprovisioning_factor``;
- route ``hash_policy``.
"""

from __future__ import annotations

from typing import Any, Final

from sofamesh.core.config.model import h2_custom_settings
from sofamesh.core.errors import ConfigError
from sofamesh.core.xds.unpack import unpack

_T = "type.googleapis.com/"
_H2_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_LB: Final = {0: "round_robin", 1: "least_request", 2: "ring_hash", 3: "random", 5: "maglev"}
_LB_NAMES: Final = {0: "ROUND_ROBIN", 1: "LEAST_REQUEST", 2: "RING_HASH", 3: "RANDOM", 5: "MAGLEV",
                    6: "CLUSTER_PROVIDED", 7: "LOAD_BALANCING_POLICY_CONFIG"}
_HEALTH: Final = {0: "unknown", 1: "healthy", 2: "unhealthy", 3: "draining", 4: "timeout", 5: "degraded"}
_METHODS: Final = {0: "GET", 1: "GET", 2: "HEAD", 3: "POST", 4: "PUT", 5: "DELETE", 7: "OPTIONS", 8: "TRACE",
                   9: "PATCH"}


def _ms(d: Any) -> int:
    return int(d.seconds) * 1000 + int(d.nanos) // 1_000_000


def _slow_start(ss: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"slow_start_window_ms": _ms(ss.slow_start_window)}
    if ss.HasField("aggression"):
        out["aggression"] = ss.aggression.default_value
    if ss.HasField("min_weight_percent"):
        out["min_weight_percent"] = ss.min_weight_percent.value
    return out


def lb_policy(c: Any, base: str, out: dict[str, Any]) -> None:
    """``lb_policy`` and its config -> ``lb`` and ``lb_config``; ``common_lb_config`` -> locality
    weighting (the panic threshold stays with ``translate.py``)."""
    lb = _LB.get(c.lb_policy)
    if lb is None:
        raise ConfigError(f"{base}: lb_policy", f"{_LB_NAMES.get(c.lb_policy, c.lb_policy)} is not supported "
                                               "(ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)")
    out["lb"] = lb
    which = c.WhichOneof("lb_config")
    cfg: dict[str, Any] = {}
    if which == "least_request_lb_config" and lb == "least_request":
        lr = c.least_request_lb_config
        if lr.HasField("choice_count"):
            cfg["choice_count"] = lr.choice_count.value
        if lr.HasField("active_request_bias"):
            cfg["active_request_bias"] = lr.active_request_bias.default_value
        if lr.HasField("slow_start_config"):
            cfg["slow_start_config"] = _slow_start(lr.slow_start_config)
    elif which == "round_robin_lb_config" and lb == "round_robin":
        if c.round_robin_lb_config.HasField("slow_start_config"):
            cfg["slow_start_config"] = _slow_start(c.round_robin_lb_config.slow_start_config)
    elif which == "ring_hash_lb_config" and lb == "ring_hash":
        rh = c.ring_hash_lb_config
        if rh.hash_function != 0:
            raise ConfigError(f"{base}: ring_hash_lb_config.hash_function", "only XX_HASH is supported")
        if rh.HasField("minimum_ring_size"):
            cfg["minimum_ring_size"] = rh.minimum_ring_size.value
        if rh.HasField("maximum_ring_size"):
            cfg["maximum_ring_size"] = rh.maximum_ring_size.value
    elif which == "maglev_lb_config" and lb == "maglev":
        if c.maglev_lb_config.HasField("table_size"):
            cfg["table_size"] = c.maglev_lb_config.table_size.value
    if cfg:
        out["lb_config"] = cfg
    if c.HasField("common_lb_config"):
        common = c.common_lb_config
        which_loc = common.WhichOneof("locality_config_specifier")
        if which_loc == "locality_weighted_lb_config":
            out["locality_weighted_lb"] = True
        elif which_loc == "zone_aware_lb_config":
            za = common.zone_aware_lb_config
            zone: dict[str, Any] = {"fail_traffic_on_panic": za.fail_traffic_on_panic}
            if za.HasField("routing_enabled"):
                zone["routing_enabled"] = za.routing_enabled.value
            if za.HasField("min_cluster_size"):
                zone["min_cluster_size"] = za.min_cluster_size.value
            out["zone_aware_lb"] = zone
        if common.HasField("consistent_hashing_lb_config"):
            ch = common.consistent_hashing_lb_config
            if ch.use_hostname_for_hashing or ch.HasField("hash_balance_factor"):
                raise ConfigError(f"{base}: common_lb_config.consistent_hashing_lb_config",
                                  "use_hostname_for_hashing and hash_balance_factor are not supported")


def health_checks(c: Any, base: str) -> list[dict[str, Any]]:
    """``health_checks`` -> the kernel's (one check per cluster)."""
    if len(c.health_checks) > 1:
        raise ConfigError(f"{base}: health_checks", "only one health check per cluster is supported")
    return [_health_check(hc, f"{base}: health_checks[{i}]") for i, hc in enumerate(c.health_checks)]


def _health_check(hc: Any, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"timeout_ms": max(1, _ms(hc.timeout)), "interval_ms": max(1, _ms(hc.interval))}
    for name in ("initial_jitter", "interval_jitter"):
        if hc.HasField(name):
            out[f"{name}_ms"] = _ms(getattr(hc, name))
    for name in ("no_traffic_interval", "unhealthy_interval", "unhealthy_edge_interval", "healthy_edge_interval"):
        if hc.HasField(name):
            out[f"{name}_ms"] = max(1, _ms(getattr(hc, name)))
    if hc.interval_jitter_percent:
        out["interval_jitter_percent"] = hc.interval_jitter_percent
    for name in ("unhealthy_threshold", "healthy_threshold"):
        if hc.HasField(name):
            out[name] = max(1, getattr(hc, name).value)
    if hc.HasField("transport_socket_match_criteria"):
        raise ConfigError(f"{path}.transport_socket_match_criteria", "is not supported")
    kind = hc.WhichOneof("health_checker")
    if kind == "http_health_check":
        h = hc.http_health_check
        hpath = f"{path}.http_health_check"
        http: dict[str, Any] = {"path": h.path or "/"}
        if h.host:
            http["host"] = h.host
        if h.codec_client_type not in (0, 1):
            raise ConfigError(f"{hpath}.codec_client_type", "only HTTP1 and HTTP2 are supported")
        http["codec_client_type"] = "HTTP2" if h.codec_client_type == 1 else "HTTP1"
        if h.method not in _METHODS:
            raise ConfigError(f"{hpath}.method", "CONNECT is not supported")
        http["method"] = _METHODS[h.method]
        if len(h.expected_statuses):
            http["expected_statuses"] = [[r.start, r.end] for r in h.expected_statuses]
        if len(h.retriable_statuses):
            http["retriable_statuses"] = [[r.start, r.end] for r in h.retriable_statuses]
        if len(h.request_headers_to_add):
            http["request_headers_to_add"] = {o.header.key: o.header.value for o in h.request_headers_to_add}
        for name in ("send", "service_name_matcher"):
            if h.HasField(name):
                raise ConfigError(f"{hpath}.{name}", "is not supported")
        if len(h.receive):
            raise ConfigError(f"{hpath}.receive", "is not supported")
        out["http_health_check"] = http
    elif kind == "tcp_health_check":
        t = hc.tcp_health_check
        tcp: dict[str, Any] = {}
        if t.HasField("send"):
            tcp["send"] = _payload(t.send, f"{path}.tcp_health_check.send")
        if len(t.receive):
            tcp["receive"] = [_payload(p, f"{path}.tcp_health_check.receive[{i}]") for i, p in enumerate(t.receive)]
        out["tcp_health_check"] = tcp
    elif kind == "grpc_health_check":
        g = hc.grpc_health_check
        if len(g.initial_metadata):
            raise ConfigError(f"{path}.grpc_health_check.initial_metadata", "is not supported")
        out["grpc_health_check"] = {"service_name": g.service_name, "authority": g.authority}
    else:
        raise ConfigError(f"{path}.{kind}", f"health checker {kind!r} is not supported "
                                            "(http_health_check, tcp_health_check, grpc_health_check)")
    return out


def _payload(p: Any, path: str) -> str:
    which = p.WhichOneof("payload")
    if which == "text":
        return str(p.text)
    if which == "binary":
        return bytes(p.binary).hex()
    raise ConfigError(path, "a payload needs text (hex) or binary")


def connection_limits(c: Any, base: str, out: dict[str, Any]) -> str | None:
    """``max_requests_per_connection`` and ``common_http_protocol_options`` of the cluster or of its
    ``HttpProtocolOptions`` -> the kernel's pool limits. Returns the upstream HTTP protocol
    ``HttpProtocolOptions`` asks for: ``http1``, ``http2`` or ``downstream``
    (``use_downstream_protocol_config``); None without them."""
    if c.HasField("max_requests_per_connection"):
        out["max_requests_per_connection"] = c.max_requests_per_connection.value
    if c.HasField("common_http_protocol_options"):
        _common(c.common_http_protocol_options, f"{base}: common_http_protocol_options", out)
    if c.HasField("http2_protocol_options"):
        _h2(c.http2_protocol_options, f"{base}: http2_protocol_options", out)
    if _H2_OPTIONS not in c.typed_extension_protocol_options:
        return None
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    opts = unpack(c.typed_extension_protocol_options[_H2_OPTIONS], http_protocol_options_pb2.HttpProtocolOptions(),
                  f"{base}: typed_extension_protocol_options[{_H2_OPTIONS}]")
    if opts.HasField("common_http_protocol_options"):
        _common(opts.common_http_protocol_options,
                f"{base}: typed_extension_protocol_options[{_H2_OPTIONS}].common_http_protocol_options", out)
    which = opts.WhichOneof("upstream_protocol_options")
    if which is not None:  # each of the three may hold the HTTP/2 connections' options
        holder = getattr(opts, which)
        if holder.HasField("http2_protocol_options"):
            where = f"{base}: typed_extension_protocol_options[{_H2_OPTIONS}].{which}.http2_protocol_options"
            _h2(holder.http2_protocol_options, where, out)
    if which == "explicit_http_config":
        return "http2" if opts.explicit_http_config.HasField("http2_protocol_options") else "http1"
    if which == "use_downstream_protocol_config":
        return "downstream"
    return "http2" if which is None else "http1"  # auto_config: HTTP/1.1 without ALPN


# Envoy's Http2ProtocolOptions fields the codec takes as numbers, with the ranges of Envoy's
# validation rules (an absent field keeps the codec's default). ``http2_options`` reads the others:
# custom_settings_parameters (Envoy's checks, ``h2_custom_settings``), override_stream_error_on_invalid_http_message
# and its deprecated stream_error_on_invalid_http_messaging, allow_connect and allow_metadata (true is
# refused: no RFC 8441 CONNECT, no METADATA frames, Envoy's extension frame; the codec ignores unknown
# frame types as RFC 9113 says); connection_keepalive is ``keepalive``'s. Left unread: use_oghttp2_codec
# (which codec library Envoy runs).
H2_LIMITS: Final = {
    "max_concurrent_streams": (1, 2**31 - 1),
    "initial_stream_window_size": (65_535, 2**31 - 1),
    "initial_connection_window_size": (65_535, 2**31 - 1),
    "max_outbound_frames": (1, 2**32 - 1),
    "max_outbound_control_frames": (1, 2**32 - 1),
    "max_consecutive_inbound_frames_with_empty_payload": (0, 2**32 - 1),
    "max_inbound_priority_frames_per_stream": (0, 2**32 - 1),
    "max_inbound_window_update_frames_per_data_frame_sent": (1, 2**32 - 1),
    "hpack_table_size": (0, 2**32 - 1),
}


def http2_options(o: Any, path: str, hcm_stream_error: bool | None = None) -> dict[str, Any] | None:
    """An ``Http2ProtocolOptions`` -> the ``http2_protocol_options`` mapping of a listener or
    cluster: the fields of ``H2_LIMITS`` it sets, its custom SETTINGS and its answer to an invalid
    HTTP message (None when it sets none of them); out of range is a ``ConfigError`` naming the
    field, as Envoy's validation rejects it. ``hcm_stream_error``: the connection manager's
    ``stream_error_on_invalid_http_message`` when set, which the override outranks and which
    outranks the deprecated field (Envoy's order)."""
    out: dict[str, Any] = {}
    for name, (low, high) in H2_LIMITS.items():
        if not o.HasField(name):
            continue
        value = int(getattr(o, name).value)
        if not low <= value <= high:
            raise ConfigError(f"{path}.{name}", f"{value} is out of range {low}..{high}")
        out[name] = value
    if o.allow_connect:
        raise ConfigError(f"{path}.allow_connect", "RFC 8441 extended CONNECT is not supported")
    if o.allow_metadata:
        raise ConfigError(f"{path}.allow_metadata", "METADATA frames are not supported")
    if len(o.custom_settings_parameters):
        params = []
        for i, p in enumerate(o.custom_settings_parameters):
            if not p.HasField("identifier") or not p.HasField("value"):
                raise ConfigError(f"{path}.custom_settings_parameters[{i}]", "needs identifier and value")
            params.append((int(p.identifier.value), int(p.value.value)))
        try:
            named, rest = h2_custom_settings(params, set(out))
        except ValueError as exc:
            raise ConfigError(f"{path}.custom_settings_parameters", str(exc)) from None
        out.update(named)
        if rest:
            out["custom_settings_parameters"] = [{"identifier": i, "value": v} for i, v in rest]
    if o.HasField("override_stream_error_on_invalid_http_message"):
        stream_error = bool(o.override_stream_error_on_invalid_http_message.value)
    elif hcm_stream_error is not None:
        stream_error = hcm_stream_error
    else:
        stream_error = bool(o.stream_error_on_invalid_http_messaging)
    if stream_error:
        out["override_stream_error_on_invalid_http_message"] = True
    return out or None


def keepalive(h2: Any, path: str, upstream: bool) -> dict[str, Any] | None:
    """``connection_keepalive`` -> a listener's or (``upstream``) cluster's: PING after ``interval``
    (plus up to ``interval_jitter`` percent of it, Envoy's 15 when unset) of silence, the
    connection closed when nothing arrives within ``timeout``; a cluster's ``connection_idle_interval``
    pings ahead of a request on a connection that long silent. Without ``interval`` Envoy sends no
    periodic PING, and neither does sofamesh; ``connection_idle_interval`` acts only where requests
    are sent (Envoy's client side), so a listener without ``interval`` gets no keepalive."""
    if not h2.HasField("connection_keepalive"):
        return None
    ka = h2.connection_keepalive
    interval = _ms(ka.interval) if ka.HasField("interval") else 0
    idle = _ms(ka.connection_idle_interval) if upstream and ka.HasField("connection_idle_interval") else 0
    if not interval and not idle:
        return None
    timeout = _ms(ka.timeout)
    if ka.HasField("interval") and interval < 1:
        raise ConfigError(f"{path}.interval", "must be at least 1ms")
    if timeout < 1:
        raise ConfigError(f"{path}.timeout", "must be at least 1ms")
    out: dict[str, Any] = {"interval_ms": interval, "timeout_ms": timeout}
    if ka.HasField("interval_jitter"):
        jitter = float(ka.interval_jitter.value)
        if not 0 <= jitter <= 100:
            raise ConfigError(f"{path}.interval_jitter", f"{jitter} is out of range 0..100")
        out["interval_jitter_percent"] = jitter
    if idle:
        out["connection_idle_interval_ms"] = idle
    return out


def _h2(o: Any, path: str, out: dict[str, Any]) -> None:
    """A cluster's ``Http2ProtocolOptions`` into its mapping: the codec's options and the keepalive."""
    h2 = http2_options(o, path)
    if h2 is not None:
        out["http2_protocol_options"] = h2
    ka = keepalive(o, f"{path}.connection_keepalive", upstream=True)
    if ka is not None:
        out["connection_keepalive"] = ka


def _common(common: Any, path: str, out: dict[str, Any]) -> None:
    if common.HasField("idle_timeout"):
        out["idle_timeout_ms"] = _ms(common.idle_timeout)
    if common.HasField("max_connection_duration"):
        out["max_connection_duration_ms"] = _ms(common.max_connection_duration)
    if common.HasField("max_requests_per_connection"):
        out["max_requests_per_connection"] = common.max_requests_per_connection.value
    if common.HasField("max_stream_duration"):
        raise ConfigError(f"{path}.max_stream_duration", "is not supported")


class Endpoints(list[dict[str, Any]]):
    """A ClusterLoadAssignment's endpoints, with its ``policy.overprovisioning_factor`` (None when
    not given) for the cluster that reads them."""

    overprovisioning_factor: int | None = None


def endpoint_fields(loc: Any, lbe: Any, ep: dict[str, Any]) -> None:
    """Priority, locality weight and health status of one endpoint into its mapping."""
    if loc.priority:
        ep["priority"] = loc.priority
    if loc.HasField("load_balancing_weight"):
        ep["locality_weight"] = loc.load_balancing_weight.value
    status = _HEALTH.get(lbe.health_status, "unknown")
    if status != "unknown":
        ep["health_status"] = status


def overprovisioning(cla: Any, eps: Endpoints) -> Endpoints:
    if cla.HasField("policy") and cla.policy.HasField("overprovisioning_factor"):
        eps.overprovisioning_factor = max(1, cla.policy.overprovisioning_factor.value)
    return eps


def hash_policies(policies: Any, path: str) -> list[dict[str, Any]]:
    """A route's ``hash_policy`` list -> the kernel's."""
    out = []
    for i, hp in enumerate(policies):
        p = f"{path}[{i}]"
        kind = hp.WhichOneof("policy_specifier")
        entry: dict[str, Any]
        if kind == "header":
            if hp.header.HasField("regex_rewrite"):
                raise ConfigError(f"{p}.header.regex_rewrite", "is not supported")
            entry = {"header": {"header_name": hp.header.header_name}}
        elif kind == "cookie":
            if hp.cookie.HasField("ttl"):
                raise ConfigError(f"{p}.cookie.ttl", "generating a cookie is not supported; hash an existing one")
            entry = {"cookie": {"name": hp.cookie.name}}
        elif kind == "connection_properties":
            entry = {"connection_properties": {"source_ip": hp.connection_properties.source_ip}}
        elif kind == "query_parameter":
            entry = {"query_parameter": {"name": hp.query_parameter.name}}
        else:
            raise ConfigError(f"{p}.{kind}", f"hash policy {kind!r} is not supported "
                                             "(header, cookie, connection_properties, query_parameter)")
        if hp.terminal:
            entry["terminal"] = True
        out.append(entry)
    return out


__all__ = ["Endpoints", "connection_limits", "endpoint_fields", "hash_policies", "health_checks", "lb_policy",
           "overprovisioning"]
