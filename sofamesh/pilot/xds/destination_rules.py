"""DestinationRule -> Envoy Cluster fields, as Istio's ``cluster_traffic_policy`` writes them.

A subset becomes its own EDS cluster ``outbound|PORT|SUBSET|NAME`` (Istio's naming; the service's
own cluster keeps ``outbound|PORT|NAME``) with only the instances its labels select. The traffic
policy a cluster gets is the rule's ``trafficPolicy``, its ``portLevelSettings`` entry for the
cluster's port replacing each of loadBalancer / connectionPool / outlierDetection it sets, then the
subset's own ``trafficPolicy`` (and its port-level settings) on top, field by field, as Istio merges.

Written: ``loadBalancer.simple`` (lb_policy), ``consistentHash`` (RING_HASH or MAGLEV, with the
route hash policy from :func:`hash_policies`), ``connectionPool`` (circuit_breakers thresholds,
connect_timeout, TCP keepalive, HTTP idle timeout / max requests per connection / max connection
duration, max concurrent streams), ``outlierDetection`` (outlier_detection and the panic threshold).
``tls`` (client TLS, :func:`client_tls`): DISABLE writes nothing; SIMPLE an UpstreamTlsContext
verifying the server against ``caCertificates`` (a file; none: the chain is not verified, as
Envoy does without a validation context), MUTUAL that plus ``clientCertificate`` / ``privateKey``
files, ISTIO_MUTUAL the workload certificate and roots over SDS (``default`` / ``ROOTCA``); ``sni``
and ``subjectAltNames`` (URI SANs for ``spiffe://`` names, DNS SANs otherwise) for all three. A
rule that sets ``tls`` replaces auto mTLS for its host, as in Istio. ``credentialName`` is refused
when the rule is applied (no SDS secret but ``default`` / ``ROOTCA`` exists to serve it).
Not written (accepted): localityLbSetting, warmup, tunnel, proxyProtocol, insecureSkipVerify, caCrl.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2

from sofamesh.pilot.policy.duration import parse_duration
from sofamesh.pilot.xds.auto_mtls import common_context

H2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_URI_SAN, _DNS_SAN = common_pb2.SubjectAltNameMatcher.URI, common_pb2.SubjectAltNameMatcher.DNS
_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
_SIMPLE = {"ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN, "RANDOM": cluster_pb2.Cluster.RANDOM,
           "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST, "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST}


def subset_cluster_name(port: int, subset: str, service: str) -> str:
    return f"outbound|{port}|{subset}|{service}"


def _duration(text: str) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(round(parse_duration(text) * 1000))
    return d


def _with_port(policy: Mapping[str, Any], port: int) -> dict[str, Any]:
    out = {k: v for k, v in policy.items() if k in _FIELDS}
    for pls in policy.get("portLevelSettings") or []:
        if int((pls.get("port") or {}).get("number", 0)) == port:
            out.update({k: v for k, v in pls.items() if k in _FIELDS})
    return out


def effective_policy(dr_spec: Mapping[str, Any] | None, port: int,
                     subset: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The traffic policy of the cluster for ``port`` (and ``subset``), merged as Istio merges it."""
    if dr_spec is None:
        return {}
    policy = _with_port(dr_spec.get("trafficPolicy") or {}, port)
    if subset is not None and subset.get("trafficPolicy"):
        policy.update(_with_port(subset["trafficPolicy"], port))
    return policy


def _slow_start(lb: Mapping[str, Any]) -> cluster_pb2.Cluster.SlowStartConfig | None:
    """``warmup`` (duration, minimumPercent, aggression) or the older ``warmupDurationSecs``."""
    raw = lb.get("warmup")
    warm: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    window = warm.get("duration") or lb.get("warmupDurationSecs")
    if not window:
        return None
    ss = cluster_pb2.Cluster.SlowStartConfig(slow_start_window=_duration(window))
    if warm.get("aggression") is not None:
        ss.aggression.default_value = float(warm["aggression"])
        ss.aggression.runtime_key = "upstream.slow_start.aggression"
    if warm.get("minimumPercent") is not None:
        ss.min_weight_percent.value = float(warm["minimumPercent"])
    return ss


def _locality(c: cluster_pb2.Cluster, lb: Mapping[str, Any]) -> None:
    setting = lb.get("localityLbSetting")
    if isinstance(setting, Mapping) and setting.get("enabled") is not False and setting.get("distribute"):
        c.common_lb_config.locality_weighted_lb_config.SetInParent()  # the weights EDS carries per proxy


def _load_balancer(c: cluster_pb2.Cluster, lb: Mapping[str, Any]) -> None:
    simple = lb.get("simple")
    if simple in _SIMPLE:
        c.lb_policy = _SIMPLE[simple]
    _locality(c, lb)
    ss = _slow_start(lb)
    if ss is not None and c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN and "consistentHash" not in lb:
        c.round_robin_lb_config.slow_start_config.CopyFrom(ss)
    elif ss is not None and c.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST:
        c.least_request_lb_config.slow_start_config.CopyFrom(ss)
    ch = lb.get("consistentHash")
    if isinstance(ch, Mapping):
        if "maglev" in ch:
            c.lb_policy = cluster_pb2.Cluster.MAGLEV
            size = (ch.get("maglev") or {}).get("tableSize")
            if size:
                c.maglev_lb_config.table_size.value = int(size)
        else:
            c.lb_policy = cluster_pb2.Cluster.RING_HASH
            size = (ch.get("ringHash") or {}).get("minimumRingSize") or ch.get("minimumRingSize")
            if size:
                c.ring_hash_lb_config.minimum_ring_size.value = int(size)


def _http_options(c: cluster_pb2.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    if H2_OPTIONS in c.typed_extension_protocol_options:
        c.typed_extension_protocol_options[H2_OPTIONS].Unpack(opts)
    return opts


def _connection_pool(c: cluster_pb2.Cluster, pool: Mapping[str, Any], http: bool) -> None:
    tcp = pool.get("tcp") or {}
    hp = pool.get("http") or {}
    th = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    limits = {"max_connections": tcp.get("maxConnections"), "max_pending_requests": hp.get("http1MaxPendingRequests"),
              "max_requests": hp.get("http2MaxRequests"), "max_retries": hp.get("maxRetries")}
    for name, value in limits.items():
        if value is not None and int(value) > 0:
            getattr(th, name).value = int(value)
    if any(v is not None for v in limits.values()):
        c.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[th]))
    if tcp.get("connectTimeout"):
        c.connect_timeout.CopyFrom(_duration(tcp["connectTimeout"]))
    ka = tcp.get("tcpKeepalive")
    if isinstance(ka, Mapping):
        keep = address_pb2.TcpKeepalive()
        if ka.get("probes"):
            keep.keepalive_probes.value = int(ka["probes"])
        if ka.get("time"):
            keep.keepalive_time.value = max(1, round(parse_duration(ka["time"])))
        if ka.get("interval"):
            keep.keepalive_interval.value = max(1, round(parse_duration(ka["interval"])))
        c.upstream_connection_options.tcp_keepalive.CopyFrom(keep)
    if not http:
        return
    common = protocol_pb2.HttpProtocolOptions()
    if hp.get("idleTimeout"):
        common.idle_timeout.CopyFrom(_duration(hp["idleTimeout"]))
    if hp.get("maxRequestsPerConnection"):
        common.max_requests_per_connection.value = int(hp["maxRequestsPerConnection"])
    if tcp.get("maxConnectionDuration"):
        common.max_connection_duration.CopyFrom(_duration(tcp["maxConnectionDuration"]))
    concurrent = hp.get("maxConcurrentStreams")
    if common.ByteSize() == 0 and not concurrent:
        return
    opts = _http_options(c)
    opts.common_http_protocol_options.CopyFrom(common)
    if concurrent and opts.explicit_http_config.HasField("http2_protocol_options"):
        opts.explicit_http_config.http2_protocol_options.max_concurrent_streams.value = int(concurrent)
    if not opts.HasField("explicit_http_config"):
        opts.explicit_http_config.http_protocol_options.SetInParent()
    packed = any_pb2.Any()
    packed.Pack(opts)
    c.typed_extension_protocol_options[H2_OPTIONS].CopyFrom(packed)


def _outlier_detection(c: cluster_pb2.Cluster, od: Mapping[str, Any]) -> None:
    out = outlier_detection_pb2.OutlierDetection()
    # As Istio writes it: the success-rate detector off, each consecutive detector enforced when set.
    out.enforcing_success_rate.value = 0
    gateway = od.get("consecutiveGatewayErrors")
    if gateway is None and od.get("consecutiveErrors") is not None:
        gateway = od["consecutiveErrors"]  # the deprecated field meant gateway errors (502, 503, 504)
    if gateway is not None:
        out.consecutive_gateway_failure.value = int(gateway)
        out.enforcing_consecutive_gateway_failure.value = 100 if int(gateway) else 0
    five = od.get("consecutive5xxErrors")
    if five is not None:
        out.consecutive_5xx.value = int(five)
        out.enforcing_consecutive_5xx.value = 100 if int(five) else 0
    elif gateway is not None:
        out.consecutive_5xx.value = 0
        out.enforcing_consecutive_5xx.value = 0
    if od.get("splitExternalLocalOriginErrors"):
        out.split_external_local_origin_errors = True
        if od.get("consecutiveLocalOriginFailures") is not None:
            out.consecutive_local_origin_failure.value = int(od["consecutiveLocalOriginFailures"])
            out.enforcing_consecutive_local_origin_failure.value = 100
    if od.get("interval"):
        out.interval.CopyFrom(_duration(od["interval"]))
    if od.get("baseEjectionTime"):
        out.base_ejection_time.CopyFrom(_duration(od["baseEjectionTime"]))
    if od.get("maxEjectionPercent") is not None:
        out.max_ejection_percent.value = int(od["maxEjectionPercent"])
    c.outlier_detection.CopyFrom(out)
    if od.get("minHealthPercent") is not None:
        c.common_lb_config.healthy_panic_threshold.value = float(od["minHealthPercent"])


def client_tls(tls: Mapping[str, Any]) -> base_pb2.TransportSocket | None:
    """A DestinationRule's ``tls`` -> the cluster's transport socket (``None``: plaintext)."""
    mode = tls.get("mode", "DISABLE")
    if mode not in ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL"):
        return None
    if mode == "ISTIO_MUTUAL":
        common = common_context()
        vc = common.combined_validation_context.default_validation_context
    else:
        common = tls_pb2.CommonTlsContext()
        if mode == "MUTUAL":
            common.tls_certificates.add(certificate_chain=base_pb2.DataSource(filename=tls["clientCertificate"]),
                                        private_key=base_pb2.DataSource(filename=tls["privateKey"]))
        vc = common.validation_context
        if tls.get("caCertificates"):
            vc.trusted_ca.filename = tls["caCertificates"]
    for san in tls.get("subjectAltNames") or []:
        kind = _URI_SAN if san.startswith("spiffe://") else _DNS_SAN
        vc.match_typed_subject_alt_names.add(san_type=kind).matcher.exact = san
    ctx = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.get("sni") or "")
    ts = base_pb2.TransportSocket(name="envoy.transport_sockets.tls")
    ts.typed_config.Pack(ctx)
    return ts


def cluster_tls(dr_spec: Mapping[str, Any], service: str, ports: Iterable[int]) -> dict[str, Mapping[str, Any]]:
    """The clusters of ``service`` whose DestinationRule sets ``tls`` (top level, port level or the
    subset's), by name, with that setting: auto mTLS leaves them alone, as in Istio."""
    out: dict[str, Mapping[str, Any]] = {}
    for port in ports:
        tls = effective_policy(dr_spec, port).get("tls")
        if isinstance(tls, Mapping):
            out[f"outbound|{port}|{service}"] = tls
        for subset in dr_spec.get("subsets") or []:
            if isinstance(subset, Mapping) and subset.get("name"):
                tls = effective_policy(dr_spec, port, subset).get("tls")
                if isinstance(tls, Mapping):
                    out[subset_cluster_name(port, subset["name"], service)] = tls
    return out


def apply_traffic_policy(c: cluster_pb2.Cluster, policy: Mapping[str, Any], http: bool) -> None:
    """Write ``policy`` (from :func:`effective_policy`) into cluster ``c``."""
    if isinstance(policy.get("tls"), Mapping):
        ts = client_tls(policy["tls"])
        if ts is not None:
            c.transport_socket.CopyFrom(ts)
    if isinstance(policy.get("loadBalancer"), Mapping):
        _load_balancer(c, policy["loadBalancer"])
    if isinstance(policy.get("connectionPool"), Mapping):
        _connection_pool(c, policy["connectionPool"], http)
    if isinstance(policy.get("outlierDetection"), Mapping):
        _outlier_detection(c, policy["outlierDetection"])


def hash_policies(policy: Mapping[str, Any]) -> list[route_components_pb2.RouteAction.HashPolicy]:
    """The route hash policy a consistentHash load balancer needs (on routes to that cluster)."""
    ch = (policy.get("loadBalancer") or {}).get("consistentHash")
    if not isinstance(ch, Mapping):
        return []
    hp = route_components_pb2.RouteAction.HashPolicy
    if ch.get("httpHeaderName"):
        return [hp(header=hp.Header(header_name=ch["httpHeaderName"]))]
    if isinstance(ch.get("httpCookie"), Mapping):
        cookie = ch["httpCookie"]
        c = hp.Cookie(name=cookie["name"], path=cookie.get("path", ""))
        if cookie.get("ttl"):
            c.ttl.CopyFrom(_duration(cookie["ttl"]))
        return [hp(cookie=c)]
    if ch.get("useSourceIp"):
        return [hp(connection_properties=hp.ConnectionProperties(source_ip=True))]
    if ch.get("httpQueryParameterName"):
        return [hp(query_parameter=hp.QueryParameter(name=ch["httpQueryParameterName"]))]
    return []


__all__ = ["H2_OPTIONS", "apply_traffic_policy", "cluster_tls", "effective_policy", "hash_policies",
           "subset_cluster_name"]
