"""networking.istio.io (v1, v1beta1, v1alpha3): VirtualService, DestinationRule, ServiceEntry,
Gateway, WorkloadEntry. Their CRD schemas (field names and types as Istio's protos define them) and
the rules Istio's validating webhook adds (``pkg/config/validation``). No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sofamesh.pilot.policy import webhook as w
from sofamesh.pilot.policy.duration import parse_duration
from sofamesh.pilot.policy.schema import (
    Bool,
    Duration,
    Enum,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    Report,
    Str,
    UInt32,
    child,
    entry,
    is_dns1123_label,
)

STRS = ListOf(Str())
STR_MAP = MapOf(Str())
STRING_MATCH = Obj({"exact": Str(), "prefix": Str(), "regex": Str()}, oneof=[("exact", "prefix", "regex")])
PERCENT = Obj({"value": Num()})
PORT_SELECTOR = Obj({"number": UInt32()})
DESTINATION = Obj({"host": Str(), "subset": Str(), "port": PORT_SELECTOR}, required=["host"])
HEADER_OPS = Obj({"set": STR_MAP, "add": STR_MAP, "remove": STRS})
HEADERS = Obj({"request": HEADER_OPS, "response": HEADER_OPS})
WORKLOAD_SELECTOR = Obj({"matchLabels": STR_MAP})

# -- VirtualService ----------------------------------------------------------------------------
HTTP_MATCH = Obj({
    "name": Str(), "uri": STRING_MATCH, "scheme": STRING_MATCH, "method": STRING_MATCH, "authority": STRING_MATCH,
    "headers": MapOf(STRING_MATCH), "port": UInt32(), "sourceLabels": STR_MAP, "gateways": STRS,
    "queryParams": MapOf(STRING_MATCH), "ignoreUriCase": Bool(), "withoutHeaders": MapOf(STRING_MATCH),
    "sourceNamespace": Str(), "statPrefix": Str(),
})
HTTP_ROUTE_DESTINATION = Obj({"destination": DESTINATION, "weight": Int(), "headers": HEADERS},
                             required=["destination"])
ROUTE_DESTINATION = Obj({"destination": DESTINATION, "weight": Int()}, required=["destination"])
HTTP_REDIRECT = Obj({"uri": Str(), "authority": Str(), "port": UInt32(),
                     "derivePort": Enum("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"), "scheme": Str(),
                     "redirectCode": UInt32()}, oneof=[("port", "derivePort")])
HTTP_DIRECT_RESPONSE = Obj({"status": UInt32(), "body": Obj({"string": Str(), "bytes": Str()},
                                                               oneof=[("string", "bytes")])}, required=["status"])
HTTP_REWRITE = Obj({"uri": Str(), "authority": Str(),
                    "uriRegexRewrite": Obj({"match": Str(), "rewrite": Str()})})
HTTP_RETRY = Obj({"attempts": Int(), "perTryTimeout": Duration(), "retryOn": Str(),
                  "retryRemoteLocalities": Bool(), "retryIgnorePreviousHosts": Bool(), "backoff": Duration()})
FAULT = Obj({
    "delay": Obj({"percent": Int(), "fixedDelay": Duration(), "exponentialDelay": Duration(), "percentage": PERCENT},
                 oneof=[("fixedDelay", "exponentialDelay")], deprecated=["percent"]),
    "abort": Obj({"httpStatus": Int(), "grpcStatus": Str(), "http2Error": Str(), "percentage": PERCENT},
                 oneof=[("httpStatus", "grpcStatus", "http2Error")]),
})
CORS = Obj({"allowOrigin": STRS, "allowOrigins": ListOf(STRING_MATCH), "allowMethods": STRS, "allowHeaders": STRS,
            "exposeHeaders": STRS, "maxAge": Duration(), "allowCredentials": Bool(),
            "unmatchedPreflights": Enum("UNSPECIFIED", "FORWARD", "IGNORE")}, deprecated=["allowOrigin"])
HTTP_ROUTE = Obj({
    "name": Str(), "match": ListOf(HTTP_MATCH), "route": ListOf(HTTP_ROUTE_DESTINATION), "redirect": HTTP_REDIRECT,
    "directResponse": HTTP_DIRECT_RESPONSE, "delegate": Obj({"name": Str(), "namespace": Str()}),
    "rewrite": HTTP_REWRITE, "timeout": Duration(), "retries": HTTP_RETRY, "fault": FAULT, "mirror": DESTINATION,
    "mirrors": ListOf(Obj({"destination": DESTINATION, "percentage": PERCENT}, required=["destination"])),
    "mirrorPercent": UInt32(), "mirrorPercentage": PERCENT, "mirror_percent": UInt32(), "corsPolicy": CORS,
    "headers": HEADERS,
}, deprecated=["mirrorPercent", "mirror_percent"])
L4_MATCH = Obj({"destinationSubnets": STRS, "port": UInt32(), "sourceSubnet": Str(), "sourceLabels": STR_MAP,
                "gateways": STRS, "sourceNamespace": Str()})
TLS_MATCH = Obj({"sniHosts": STRS, "destinationSubnets": STRS, "port": UInt32(), "sourceLabels": STR_MAP,
                 "gateways": STRS, "sourceNamespace": Str()}, required=["sniHosts"])
VIRTUAL_SERVICE = Obj({
    "hosts": STRS, "gateways": STRS, "http": ListOf(HTTP_ROUTE),
    "tls": ListOf(Obj({"match": ListOf(TLS_MATCH), "route": ListOf(ROUTE_DESTINATION)}, required=["match"])),
    "tcp": ListOf(Obj({"match": ListOf(L4_MATCH), "route": ListOf(ROUTE_DESTINATION)})), "exportTo": STRS,
})

_RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
GRPC_STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
               "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
               "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
_CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})


def _http_status(value: Any, path: str, report: Report) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not 200 <= value <= 599:
        report.error(path, f"HTTP status {value} is not in range 200-599")


def _check_match(m: Mapping[str, Any], path: str, report: Report) -> None:
    for field in ("uri", "scheme", "method", "authority"):
        w.check_string_match(m.get(field), child(path, field), report)
    for field in ("headers", "withoutHeaders", "queryParams"):
        items = m.get(field)
        if not isinstance(items, Mapping):
            continue
        for name, sm in items.items():
            p = entry(child(path, field), str(name))
            if field != "queryParams":
                w.check_header_name(str(name), p, report, match=True)
                if str(name).startswith("@request.auth.claims"):
                    report.error(p, f"JWT claim based routing (key: {name}) is only supported for gateway")
            w.check_string_match(sm, p, report)
    w.check_labels(m.get("sourceLabels"), child(path, "sourceLabels"), report)
    w.check_gateway_names(m.get("gateways"), child(path, "gateways"), report)
    if m.get("port") == 0:
        report.error(child(path, "port"), "port number 0 is out of range 1-65535")
    elif isinstance(m.get("port"), int) and m["port"] > 65535:
        report.error(child(path, "port"), f"port number {m['port']} is out of range 1-65535")


def _check_retries(r: Mapping[str, Any], path: str, report: Report) -> None:
    attempts = r.get("attempts", 0)
    if isinstance(attempts, int) and attempts < 0:
        report.error(child(path, "attempts"), "attempts cannot be negative")
    if attempts == 0 and any(r.get(k) is not None for k in ("perTryTimeout", "retryOn", "retryRemoteLocalities")):
        report.error(path, "http retry policy configured when attempts are set to 0 (disabled)")
    for field in ("perTryTimeout", "backoff"):
        w.check_duration_value(r.get(field), child(path, field), report)
    retry_on = r.get("retryOn")
    if isinstance(retry_on, str) and retry_on:
        for policy in retry_on.split(","):
            if policy not in _RETRY_ON and not (policy.isdigit() and 100 <= int(policy) <= 599):
                report.error(child(path, "retryOn"), f"{policy!r} is not a valid retryOn policy")


def _check_fault(f: Mapping[str, Any], path: str, report: Report) -> None:
    if f.get("abort") is None and f.get("delay") is None:
        report.error(path, "HTTP fault injection must have an abort and/or a delay")
    abort = f.get("abort")
    if isinstance(abort, Mapping):
        p = child(path, "abort")
        w.check_percentage(abort.get("percentage"), child(p, "percentage"), report)
        if "httpStatus" in abort:
            _http_status(abort["httpStatus"], child(p, "httpStatus"), report)
        elif "grpcStatus" in abort:
            if isinstance(abort["grpcStatus"], str) and abort["grpcStatus"] not in GRPC_STATUS:
                report.error(child(p, "grpcStatus"), f"gRPC status {abort['grpcStatus']!r} is not supported "
                                                     f"(known: {', '.join(GRPC_STATUS)})")
        elif "http2Error" in abort:
            report.error(child(p, "http2Error"), "HTTP/2 abort fault injection not supported yet")
        else:
            report.warn(p, "abort configured, but error type not set")
    delay = f.get("delay")
    if isinstance(delay, Mapping):
        p = child(path, "delay")
        w.check_percentage(delay.get("percentage"), child(p, "percentage"), report)
        pct = delay.get("percent")
        if isinstance(pct, int) and not 0 <= pct <= 100:
            report.error(child(p, "percent"), f"percentage {pct} is not in range 0..100")
        if "exponentialDelay" in delay:
            report.error(child(p, "exponentialDelay"), "exponentialDelay not supported yet")
        elif "fixedDelay" not in delay:
            report.error(child(p, "fixedDelay"), "required field is missing")
        w.check_duration_value(delay.get("fixedDelay"), child(p, "fixedDelay"), report)


def _check_cors(c: Mapping[str, Any], path: str, report: Report) -> None:
    for i, origin in enumerate(c.get("allowOrigins") or []):
        p = child(child(path, "allowOrigins"), i)
        if isinstance(origin, Mapping) and not any(origin.get(k) for k in ("exact", "prefix", "regex")):
            report.error(p, "'' is not a valid match type for CORS allow origins")
        w.check_string_match(origin, p, report)
    for i, method in enumerate(c.get("allowMethods") or []):
        if isinstance(method, str) and method not in _CORS_METHODS:
            report.error(child(child(path, "allowMethods"), i), f"{method!r} is not a supported HTTP method")
    for field in ("allowHeaders", "exposeHeaders"):
        for i, name in enumerate(c.get(field) or []):
            if isinstance(name, str) and name != "*":
                w.check_header_name(name, child(child(path, field), i), report)
    max_age = c.get("maxAge")
    w.check_duration_value(max_age, child(path, "maxAge"), report)
    if isinstance(max_age, str):
        try:
            seconds = parse_duration(max_age)
        except ValueError:
            return
        if seconds != int(seconds):
            report.error(child(path, "maxAge"), "max_age duration is accurate only to seconds precision")


def _check_http_route(r: Mapping[str, Any], path: str, report: Report, delegate_vs: bool) -> None:
    def has(k: str) -> bool:
        return r.get(k) not in (None, [], {})

    if has("delegate"):
        if delegate_vs:
            report.error(child(path, "delegate"), "delegate virtual service can not delegate again")
        for other in ("route", "redirect", "directResponse"):
            if has(other):
                report.error(path, f"HTTP route cannot contain both {other} and delegate")
        d = r["delegate"]
        if isinstance(d, Mapping):
            if not d.get("name"):
                report.error(child(child(path, "delegate"), "name"), "delegate name is required")
            elif not is_dns1123_label(str(d["name"])):
                report.error(child(child(path, "delegate"), "name"), f"invalid delegate name {d['name']!r}")
            if d.get("namespace") and not is_dns1123_label(str(d["namespace"])):
                report.error(child(child(path, "delegate"), "namespace"),
                             f"invalid delegate namespace {d['namespace']!r}")
    if has("redirect"):
        if has("route"):
            report.error(path, "HTTP route cannot contain both route and redirect")
        if has("fault"):
            report.error(path, "HTTP route cannot contain both fault and redirect")
        if has("rewrite"):
            report.error(path, "HTTP route rule cannot contain both rewrite and redirect")
        if has("directResponse"):
            report.error(path, "HTTP route cannot contain both redirect and directResponse")
    if has("directResponse"):
        if has("route"):
            report.error(path, "HTTP route cannot contain both route and directResponse")
        if has("fault"):
            report.error(path, "HTTP route cannot contain both fault and directResponse")
        if has("rewrite"):
            report.error(path, "HTTP route rule cannot contain both rewrite and directResponse")
    if not any(has(k) for k in ("route", "redirect", "directResponse", "delegate")):
        report.error(path, "HTTP route, redirect, directResponse or delegate is required")
    if has("mirror") and has("mirrors"):
        report.error(path, "HTTP route cannot contain both mirror and mirrors")
    if r.get("mirrorPercent") is not None and r.get("mirrorPercentage") is not None:
        report.error(path, "HTTP route cannot contain both mirrorPercent and mirrorPercentage")
    for field in ("mirrorPercent", "mirror_percent"):
        v = r.get(field)
        if isinstance(v, int) and v > 100:
            report.error(child(path, field), f"mirror_percent must have a max value of 100 (it has {v})")
    mp = r.get("mirrorPercentage")
    if isinstance(mp, Mapping) and isinstance(mp.get("value"), int | float):
        if mp["value"] > 100:
            report.error(child(path, "mirrorPercentage"),
                         f"mirror_percentage must have a max value of 100 (it has {mp['value']})")
        if mp["value"] < 0:
            report.error(child(path, "mirrorPercentage"),
                         f"mirror_percentage must have a min value of 0 (it has {mp['value']})")
    w.check_destination(r.get("mirror"), child(path, "mirror"), report)
    for i, m in enumerate(r.get("mirrors") or []):
        if isinstance(m, Mapping):
            w.check_destination(m.get("destination"), child(child(child(path, "mirrors"), i), "destination"), report)
            w.check_percentage(m.get("percentage"), child(child(child(path, "mirrors"), i), "percentage"), report)
    w.check_headers(r.get("headers"), child(path, "headers"), report)
    for i, m in enumerate(r.get("match") or []):
        if isinstance(m, Mapping):
            _check_match(m, child(child(path, "match"), i), report)
    routes = r.get("route") or []
    for i, d in enumerate(routes):
        if isinstance(d, Mapping):
            p = child(child(path, "route"), i)
            w.check_destination(d.get("destination"), child(p, "destination"), report)
            w.check_headers(d.get("headers"), child(p, "headers"), report)
    w.check_weighted(routes, child(path, "route"), report)
    w.check_duration_value(r.get("timeout"), child(path, "timeout"), report)
    if isinstance(r.get("retries"), Mapping):
        _check_retries(r["retries"], child(path, "retries"), report)
    if isinstance(r.get("fault"), Mapping):
        _check_fault(r["fault"], child(path, "fault"), report)
    if isinstance(r.get("corsPolicy"), Mapping):
        _check_cors(r["corsPolicy"], child(path, "corsPolicy"), report)
    _check_redirect_rewrite_direct(r, path, report)


def _check_redirect_rewrite_direct(r: Mapping[str, Any], path: str, report: Report) -> None:
    redirect = r.get("redirect")
    if isinstance(redirect, Mapping):
        p = child(path, "redirect")
        if not any(redirect.get(k) for k in ("uri", "authority", "port", "derivePort", "scheme")):
            report.error(p, "redirect must specify URI, authority, scheme, or port")
        code = redirect.get("redirectCode")
        if isinstance(code, int) and code and not 300 <= code <= 399:
            report.error(child(p, "redirectCode"), f"{code} is not a valid redirect code, must be 3xx")
        if redirect.get("scheme") not in (None, "", "http", "https"):
            report.error(child(p, "scheme"), 'invalid redirect scheme, must be "http" or "https"')
        port = redirect.get("port")
        if isinstance(port, int) and port > 65535:
            report.error(child(p, "port"), f"port number {port} is out of range 1-65535")
    rewrite = r.get("rewrite")
    if isinstance(rewrite, Mapping):
        p = child(path, "rewrite")
        rr = rewrite.get("uriRegexRewrite")
        if rewrite.get("uri") and rr is not None:
            report.error(p, "rewrite may only contain one of URI or UriRegexRewrite")
        if not rewrite.get("uri") and rr is None and not rewrite.get("authority"):
            report.error(p, "rewrite must specify at least one of URI, UriRegexRewrite, or authority")
        if isinstance(rr, Mapping):
            if not rr.get("match") or not rr.get("rewrite"):
                report.error(child(p, "uriRegexRewrite"), "UriRegexRewrite requires both Rewrite and Match fields "
                                                          "to be specified")
            else:
                w.check_regex(rr["match"], child(child(p, "uriRegexRewrite"), "match"), report)
    direct = r.get("directResponse")
    if isinstance(direct, Mapping):
        p = child(path, "directResponse")
        _http_status(direct.get("status"), child(p, "status"), report)
        body = direct.get("body")
        if isinstance(body, Mapping):
            size = len(str(body.get("string") or body.get("bytes") or ""))
            if size > 1024 * 1024:
                report.error(child(p, "body"), "large direct_responses may impact control plane performance, "
                                               "must be less than 1MB")
            elif size > 100 * 1024:
                report.warn(child(p, "body"), "large direct_responses may impact control plane performance")


def _warn_unreachable(routes: list[Any], path: str, report: Report) -> None:
    catch_all = -1
    for i, r in enumerate(routes):
        if not isinstance(r, Mapping):
            continue
        if catch_all >= 0:
            report.warn(child(path, i), f"virtualService rule #{i} not used (route without matches defined before)")
        elif not r.get("match"):
            catch_all = i


def check_virtual_service(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    hosts = spec.get("hosts") or []
    gateways = spec.get("gateways") or []
    if not hosts:
        if gateways:
            report.error("spec.gateways", "delegate virtual service must have no gateways specified")
        if spec.get("tls"):
            report.error("spec.tls", "delegate virtual service must have no tls route specified")
        if spec.get("tcp"):
            report.error("spec.tcp", "delegate virtual service must have no tcp route specified")
    w.check_gateway_names(gateways, "spec.gateways", report)
    applies_to_mesh = not gateways or "mesh" in gateways
    seen: dict[str, int] = {}
    for i, h in enumerate(hosts):
        if not isinstance(h, str):
            continue
        p = child("spec.hosts", i)
        if h == "*" and applies_to_mesh:
            report.error(p, "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            continue
        w.check_host(h, p, report)
        if h in seen:
            report.error(p, f"duplicate hosts in virtual service: {h} & {hosts[seen[h]]}")
        seen[h] = i
    if not spec.get("http") and not spec.get("tcp") and not spec.get("tls"):
        report.error("spec", "http, tcp or tls must be provided in virtual service")
    for i, r in enumerate(spec.get("http") or []):
        if isinstance(r, Mapping):
            _check_http_route(r, child("spec.http", i), report, delegate_vs=not hosts)
    _warn_unreachable(spec.get("http") or [], "spec.http", report)
    for kind in ("tcp", "tls"):
        for i, r in enumerate(spec.get(kind) or []):
            if not isinstance(r, Mapping):
                continue
            p = child(f"spec.{kind}", i)
            if kind == "tls" and not r.get("match"):
                report.error(child(p, "match"), "TLS route must have at least one match condition")
            if not r.get("route"):
                report.error(child(p, "route"), f"{kind.upper()} route is required")
            for j, m in enumerate(r.get("match") or []):
                if not isinstance(m, Mapping):
                    continue
                mp = child(child(p, "match"), j)
                for k, s in enumerate(m.get("destinationSubnets") or []):
                    w.check_ip_or_cidr(s, child(child(mp, "destinationSubnets"), k), report)
                w.check_labels(m.get("sourceLabels"), child(mp, "sourceLabels"), report)
                w.check_gateway_names(m.get("gateways"), child(mp, "gateways"), report)
                for k, sni in enumerate(m.get("sniHosts") or []):
                    _check_sni(sni, hosts, child(child(mp, "sniHosts"), k), report)
            for j, d in enumerate(r.get("route") or []):
                if isinstance(d, Mapping):
                    w.check_destination(d.get("destination"), child(child(child(p, "route"), j), "destination"),
                                        report)
            w.check_weighted(r.get("route"), child(p, "route"), report)
    w.check_export_to(namespace, spec.get("exportTo"), "spec.exportTo", report)


def _check_sni(sni: Any, hosts: list[Any], path: str, report: Report) -> None:
    if not isinstance(sni, str):
        return
    if w.is_ip(sni):
        report.warn(path, f"using an IP address ({sni!r}) goes against SNI spec and most clients do not support this")
        return
    problem = w.dns_domain_problem(sni)
    if problem:
        report.error(path, problem)
        return
    for h in hosts:
        if isinstance(h, str) and (h == sni or h == "*" or (h.startswith("*.") and sni.endswith(h[1:]))):
            return
    report.error(path, f"SNI host {sni!r} is not a compatible subset of any of the virtual service hosts: "
                       f"[{', '.join(str(h) for h in hosts)}]")


# -- DestinationRule ---------------------------------------------------------------------------
TLS_SETTINGS = Obj({
    "mode": Enum("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"), "clientCertificate": Str(), "privateKey": Str(),
    "caCertificates": Str(), "credentialName": Str(), "subjectAltNames": STRS, "sni": Str(),
    "insecureSkipVerify": Bool(), "caCrl": Str(),
})
CONNECTION_POOL = Obj({
    "tcp": Obj({"maxConnections": Int(), "connectTimeout": Duration(),
                "tcpKeepalive": Obj({"probes": UInt32(), "time": Duration(), "interval": Duration()}),
                "maxConnectionDuration": Duration(), "idleTimeout": Duration()}),
    "http": Obj({"http1MaxPendingRequests": Int(), "http2MaxRequests": Int(), "maxRequestsPerConnection": Int(),
                 "maxRetries": Int(), "idleTimeout": Duration(),
                 "h2UpgradePolicy": Enum("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"), "useClientProtocol": Bool(),
                 "maxConcurrentStreams": Int()}),
})
OUTLIER = Obj({
    "consecutiveErrors": Int(), "splitExternalLocalOriginErrors": Bool(), "consecutiveLocalOriginFailures": UInt32(),
    "consecutiveGatewayErrors": UInt32(), "consecutive5xxErrors": UInt32(), "interval": Duration(),
    "baseEjectionTime": Duration(), "maxEjectionPercent": Int(), "minHealthPercent": Int(),
}, deprecated=["consecutiveErrors"])
LOCALITY_LB = Obj({
    "distribute": ListOf(Obj({"from": Str(), "to": MapOf(UInt32())})),
    "failover": ListOf(Obj({"from": Str(), "to": Str()})), "failoverPriority": STRS, "enabled": Bool(),
})
LOAD_BALANCER = Obj({
    "simple": Enum("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"),
    "consistentHash": Obj({
        "httpHeaderName": Str(),
        "httpCookie": Obj({"name": Str(), "path": Str(), "ttl": Duration(),
                           "attributes": ListOf(Obj({"name": Str(), "value": Str()}, required=["name"]))},
                          required=["name"]),
        "useSourceIp": Bool(), "httpQueryParameterName": Str(),
        "ringHash": Obj({"minimumRingSize": UInt32()}), "maglev": Obj({"tableSize": UInt32()}),
        "minimumRingSize": UInt32(),
    }, oneof=[("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"), ("ringHash", "maglev")],
        deprecated=["minimumRingSize"]),
    "localityLbSetting": LOCALITY_LB, "warmupDurationSecs": Duration(),
    "warmup": Obj({"duration": Duration(), "minimumPercent": Num(), "aggression": Num()}, required=["duration"]),
}, oneof=[("simple", "consistentHash")])
PORT_TRAFFIC_POLICY = Obj({"port": PORT_SELECTOR, "loadBalancer": LOAD_BALANCER, "connectionPool": CONNECTION_POOL,
                           "outlierDetection": OUTLIER, "tls": TLS_SETTINGS})
TRAFFIC_POLICY = Obj({
    "loadBalancer": LOAD_BALANCER, "connectionPool": CONNECTION_POOL, "outlierDetection": OUTLIER,
    "tls": TLS_SETTINGS, "portLevelSettings": ListOf(PORT_TRAFFIC_POLICY),
    "tunnel": Obj({"protocol": Str(), "targetHost": Str(), "targetPort": UInt32()},
                  required=["targetHost", "targetPort"]),
    "proxyProtocol": Obj({"version": Enum("V1", "V2")}),
})
DESTINATION_RULE = Obj({
    "host": Str(), "trafficPolicy": TRAFFIC_POLICY,
    "subsets": ListOf(Obj({"name": Str(), "labels": STR_MAP, "trafficPolicy": TRAFFIC_POLICY}, required=["name"])),
    "exportTo": STRS, "workloadSelector": WORKLOAD_SELECTOR,
}, required=["host"])


def _non_negative(obj: Mapping[str, Any], path: str, report: Report, fields: dict[str, str]) -> None:
    for field, what in fields.items():
        v = obj.get(field)
        if isinstance(v, int) and v < 0:
            report.error(child(path, field), f"{what} must be non-negative")


def _check_connection_pool(cp: Mapping[str, Any], path: str, report: Report) -> None:
    if cp.get("http") is None and cp.get("tcp") is None:
        report.error(path, "connection pool must have at least one field")
    http = cp.get("http")
    if isinstance(http, Mapping):
        p = child(path, "http")
        _non_negative(http, p, report, {"http1MaxPendingRequests": "http1 max pending requests",
                                        "http2MaxRequests": "http2 max requests",
                                        "maxRequestsPerConnection": "max requests per connection",
                                        "maxRetries": "max retries", "maxConcurrentStreams": "max concurrent streams"})
        w.check_duration_value(http.get("idleTimeout"), child(p, "idleTimeout"), report)
        if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
            report.error(p, "use client protocol must not be true when H2UpgradePolicy is UPGRADE")
    tcp = cp.get("tcp")
    if isinstance(tcp, Mapping):
        p = child(path, "tcp")
        _non_negative(tcp, p, report, {"maxConnections": "max connections"})
        for field in ("connectTimeout", "maxConnectionDuration"):
            w.check_duration_value(tcp.get(field), child(p, field), report)
        if tcp.get("idleTimeout") not in (None, "0s", "0"):
            w.check_duration_value(tcp.get("idleTimeout"), child(p, "idleTimeout"), report)
        ka = tcp.get("tcpKeepalive")
        if isinstance(ka, Mapping):
            for field in ("time", "interval"):
                w.check_duration_value(ka.get(field), child(child(p, "tcpKeepalive"), field), report)


def _check_outlier(o: Mapping[str, Any], path: str, report: Report) -> None:
    for field in ("baseEjectionTime", "interval"):
        w.check_duration_value(o.get(field), child(path, field), report)
    if o.get("consecutiveErrors"):
        report.warn(child(path, "consecutiveErrors"), "outlier detection consecutive errors is deprecated, use "
                                                      "consecutiveGatewayErrors or consecutive5xxErrors instead")
    if not o.get("splitExternalLocalOriginErrors") and (o.get("consecutiveLocalOriginFailures") or 0) > 0:
        report.error(child(path, "consecutiveLocalOriginFailures"),
                     "outlier detection consecutive local origin failures is specified, but split external local "
                     "origin errors is set to false")
    for field in ("maxEjectionPercent", "minHealthPercent"):
        v = o.get(field)
        if isinstance(v, int) and not 0 <= v <= 100:
            report.error(child(path, field), f"percentage {v} is not in range 0..100")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n < 4:
        return True
    if n % 2 == 0:
        return False
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _locality_problem(loc: str) -> str | None:
    parts = loc.split("/")
    if len(parts) > 3 or any(p == "" for p in parts):
        return f"locality {loc!r} must be region[/zone[/subzone]]"
    if any("*" in p and (p != "*" or i != len(parts) - 1) for i, p in enumerate(parts)):
        return f"locality {loc!r}: a wildcard is only allowed as the last part"
    return None


def _check_locality(lb: Mapping[str, Any], outlier: Any, path: str, report: Report) -> None:
    distribute, failover = lb.get("distribute") or [], lb.get("failover") or []
    if distribute and (failover or lb.get("failoverPriority")):
        report.error(path, "can not simultaneously set 'distribute' and 'failover'")
    if (failover or lb.get("failoverPriority")) and outlier is None:
        report.error(path, "outlier detection policy must be provided for failover")
    froms: set[str] = set()
    for i, d in enumerate(distribute):
        if not isinstance(d, Mapping):
            continue
        p = child(child(path, "distribute"), i)
        src = d.get("from")
        if isinstance(src, str):
            problem = _locality_problem(src)
            if problem:
                report.error(child(p, "from"), problem)
            if src in froms:
                report.error(child(p, "from"), f"locality {src} overlap with previous specified ones")
            froms.add(src)
        to = d.get("to") or {}
        if isinstance(to, Mapping):
            total = sum(v for v in to.values() if isinstance(v, int))
            if total != 100:
                report.error(child(p, "to"), f"total weight across all localities must be 100, got {total}")
            for loc in to:
                problem = _locality_problem(str(loc))
                if problem:
                    report.error(entry(child(p, "to"), str(loc)), problem)
    for i, f in enumerate(failover):
        if not isinstance(f, Mapping):
            continue
        p = child(child(path, "failover"), i)
        if f.get("from") == f.get("to"):
            report.error(p, "locality lb failover settings must specify different regions")
        if "/" in str(f.get("from", "")) or "/" in str(f.get("to", "")):
            report.error(p, "locality lb failover only specify region")


def _check_load_balancer(lb: Mapping[str, Any], outlier: Any, path: str, report: Report) -> None:
    ch = lb.get("consistentHash")
    if isinstance(ch, Mapping):
        p = child(path, "consistentHash")
        cookie = ch.get("httpCookie")
        if isinstance(cookie, Mapping):
            if cookie.get("name") == "":
                report.error(child(child(p, "httpCookie"), "name"), "name required for HttpCookie")
            w.check_duration_value(cookie.get("ttl"), child(child(p, "httpCookie"), "ttl"), report, minimum=0)
        if ch.get("minimumRingSize") and (ch.get("ringHash") or ch.get("maglev")):
            report.error(p, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
        ml = ch.get("maglev")
        if isinstance(ml, Mapping):
            size = ml.get("tableSize", 0)
            if isinstance(size, int):
                if size == 0:
                    report.error(child(child(p, "maglev"), "tableSize"), "tableSize must be set for maglev")
                elif size >= 5000011:
                    report.error(child(child(p, "maglev"), "tableSize"),
                                 "tableSize must be less than 5000011 for maglev")
                elif not _is_prime(size):
                    report.error(child(child(p, "maglev"), "tableSize"), "tableSize must be a prime number for maglev")
    if isinstance(lb.get("localityLbSetting"), Mapping):
        _check_locality(lb["localityLbSetting"], outlier, child(path, "localityLbSetting"), report)
    w.check_duration_value(lb.get("warmupDurationSecs"), child(path, "warmupDurationSecs"), report)
    warm = lb.get("warmup")
    if isinstance(warm, Mapping):
        w.check_duration_value(warm.get("duration"), child(child(path, "warmup"), "duration"), report)
        mp = warm.get("minimumPercent")
        if isinstance(mp, int | float) and mp > 100:
            report.error(child(child(path, "warmup"), "minimumPercent"),
                         "minimumPercent value should be less than or equal to 100")
        ag = warm.get("aggression")
        if isinstance(ag, int | float) and ag < 1:
            report.error(child(child(path, "warmup"), "aggression"), "aggression should be greater than or equal to 1")


def check_client_tls(tls: Mapping[str, Any], path: str, report: Report) -> None:
    """Istio's ``ValidateTLS`` for a DestinationRule's ``tls``."""
    mode = tls.get("mode", "DISABLE")
    has_creds = tls.get("credentialName")
    if has_creds and mode in ("SIMPLE", "MUTUAL"):
        report.error(child(path, "credentialName"), "not supported: a sidecar's agent serves only its workload "
                     "certificate (default) and roots (ROOTCA) over SDS; give caCertificates, clientCertificate "
                     "and privateKey files instead")
    if mode == "ISTIO_MUTUAL" and any(tls.get(k) for k in ("clientCertificate", "privateKey", "caCertificates",
                                                            "credentialName", "caCrl")):
        report.error(path, "cannot specify client certificates or CA certificate or credentialName if mode is "
                           "ISTIO_MUTUAL")
    if tls.get("insecureSkipVerify"):
        if mode == "SIMPLE" and (tls.get("caCertificates") or has_creds or tls.get("subjectAltNames")):
            report.error(path, "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                               "InsecureSkipVerify is set true")
        if mode == "MUTUAL" and (tls.get("caCertificates") or tls.get("subjectAltNames")):
            report.error(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true")
    if mode in ("SIMPLE", "MUTUAL") and has_creds:
        if any(tls.get(k) for k in ("clientCertificate", "caCertificates", "privateKey", "caCrl")):
            report.error(path, "cannot specify client certificates or CA certificate or CA CRL If credentialName "
                               "is set")
        return
    if mode == "MUTUAL":
        if not tls.get("clientCertificate"):
            report.error(child(path, "clientCertificate"), "client certificate required for mutual tls")
        if not tls.get("privateKey"):
            report.error(child(path, "privateKey"), "private key required for mutual tls")


def check_traffic_policy(tp: Mapping[str, Any], path: str, report: Report, *, port_level: bool = False) -> None:
    keys = ("outlierDetection", "connectionPool", "loadBalancer", "tls") + (
        () if port_level else ("portLevelSettings", "tunnel", "proxyProtocol"))
    if all(tp.get(k) is None for k in keys):
        report.error(path, ("port " if port_level else "") + "traffic policy must have at least one field")
        return
    if tp.get("tunnel") is not None and tp.get("proxyProtocol") is not None:
        report.error(path, "tunnel and proxyProtocol must not be set together")
    if isinstance(tp.get("outlierDetection"), Mapping):
        _check_outlier(tp["outlierDetection"], child(path, "outlierDetection"), report)
    if isinstance(tp.get("connectionPool"), Mapping):
        _check_connection_pool(tp["connectionPool"], child(path, "connectionPool"), report)
    if isinstance(tp.get("loadBalancer"), Mapping):
        _check_load_balancer(tp["loadBalancer"], tp.get("outlierDetection"), child(path, "loadBalancer"), report)
    if isinstance(tp.get("tls"), Mapping):
        check_client_tls(tp["tls"], child(path, "tls"), report)
    tunnel = tp.get("tunnel")
    if isinstance(tunnel, Mapping):
        p = child(path, "tunnel")
        if tunnel.get("protocol") not in (None, "", "CONNECT", "POST"):
            report.error(child(p, "protocol"), 'tunnel protocol must be "CONNECT" or "POST"')
        target = tunnel.get("targetHost")
        if isinstance(target, str) and w.dns_domain_problem(target, wildcard=False) and not w.is_ip(target):
            report.error(child(p, "targetHost"), f"tunnel target host must be valid FQDN or IP address: {target!r}")
        port = tunnel.get("targetPort")
        if isinstance(port, int) and not 1 <= port <= 65535:
            report.error(child(p, "targetPort"), f"tunnel target port is invalid: {port}")
    seen: set[int] = set()
    for i, pl in enumerate(tp.get("portLevelSettings") or []):
        if not isinstance(pl, Mapping):
            continue
        p = child(child(path, "portLevelSettings"), i)
        number = (pl.get("port") or {}).get("number") if isinstance(pl.get("port"), Mapping) else None
        if not number:
            report.error(child(p, "port"), "portTrafficPolicy must have valid port")
        elif number in seen:
            report.error(child(p, "port"), f"duplicate port level settings for port {number}")
        else:
            seen.add(number)
        check_traffic_policy(pl, p, report, port_level=True)


def check_destination_rule(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    host = spec.get("host")
    if host == "":
        report.error("spec.host", "domain name cannot be empty")
    w.check_host(host, "spec.host", report, allow_ip=False)
    if isinstance(spec.get("trafficPolicy"), Mapping):
        check_traffic_policy(spec["trafficPolicy"], "spec.trafficPolicy", report)
    names: set[str] = set()
    for i, s in enumerate(spec.get("subsets") or []):
        if not isinstance(s, Mapping):
            continue
        p = child("spec.subsets", i)
        name = s.get("name")
        if isinstance(name, str):
            if name in names:
                report.error(child(p, "name"), f"duplicate subset names: {name}")
            names.add(name)
            w.check_subset_name(name, child(p, "name"), report)
        w.check_labels(s.get("labels"), child(p, "labels"), report)
        if isinstance(s.get("trafficPolicy"), Mapping):
            check_traffic_policy(s["trafficPolicy"], child(p, "trafficPolicy"), report)
    selector = spec.get("workloadSelector")
    w.check_export_to(namespace, spec.get("exportTo"), "spec.exportTo", report,
                      dr_with_selector=selector is not None)
    if isinstance(selector, Mapping):
        w.check_selector(selector.get("matchLabels", {}), "spec.workloadSelector.matchLabels", report)


# -- ServiceEntry and WorkloadEntry ------------------------------------------------------------
WORKLOAD_ENTRY = Obj({"address": Str(), "ports": MapOf(UInt32()), "labels": STR_MAP, "network": Str(),
                      "locality": Str(), "weight": UInt32(), "serviceAccount": Str()})
SERVICE_PORT = Obj({"number": UInt32(), "protocol": Str(), "name": Str(), "targetPort": UInt32()},
                   required=["number", "name"])
SERVICE_ENTRY = Obj({
    "hosts": STRS, "addresses": STRS, "ports": ListOf(SERVICE_PORT),
    "location": Enum("MESH_EXTERNAL", "MESH_INTERNAL"),
    "resolution": Enum("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"), "endpoints": ListOf(WORKLOAD_ENTRY),
    "workloadSelector": Obj({"labels": STR_MAP}), "exportTo": STRS, "subjectAltNames": STRS,
}, required=["hosts"])
# Istio's protocols (``protocol.Parse``), plus sofamesh's RPC protocols (an extension).
PORT_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "MONGO", "MYSQL", "REDIS", "TCP",
                  "TLS", "UDP", "BOLT", "DUBBO", "TRIPLE")


def check_protocol(value: Any, path: str, report: Report) -> None:
    if isinstance(value, str) and value and value.upper() not in PORT_PROTOCOLS:
        report.error(path, f"unsupported protocol: {value} (known: {', '.join(PORT_PROTOCOLS)})")


def _check_port_name(name: Any, path: str, report: Report) -> None:
    if isinstance(name, str) and not is_dns1123_label(name):
        report.error(path, f"invalid port name: {name}")


def _check_workload(we: Mapping[str, Any], path: str, report: Report, *, service_ports: set[str] | None,
                    allow_fqdn: bool) -> None:
    addr = we.get("address") or ""
    if not addr:
        if not we.get("network"):
            report.error(child(path, "address"), "address is required")
        else:
            report.warn(child(path, "address"), f"address is unset with network {we.get('network')!r}")
    if isinstance(addr, str) and addr.startswith("unix://"):
        target = addr[len("unix://"):]
        if not target.startswith(("/", "@")) or target.endswith("/"):
            report.error(child(path, "address"), f"{target} is not an absolute path to a file")
        if we.get("ports"):
            report.error(child(path, "ports"), f"unix endpoint {addr} must not include ports")
    elif isinstance(addr, str) and addr and not w.is_ip(addr):
        if not allow_fqdn:
            report.error(child(path, "address"), f"endpoint address {addr!r} is not a valid IP address")
        elif w.dns_domain_problem(addr, wildcard=False):
            report.error(child(path, "address"), f"endpoint address {addr!r} is not a valid FQDN or an IP address")
    ports = we.get("ports")
    if isinstance(ports, Mapping):
        for name, port in ports.items():
            p = entry(child(path, "ports"), str(name))
            if service_ports is not None and name not in service_ports:
                report.error(p, f"endpoint port {port} is not defined by the service entry")
            _check_port_name(name, p, report)
            if isinstance(port, int) and not 1 <= port <= 65535:
                report.error(p, f"port number {port} is out of range 1-65535")
    w.check_labels(we.get("labels"), child(path, "labels"), report)
    loc = we.get("locality")
    if isinstance(loc, str) and loc:
        problem = _locality_problem(loc)
        if problem or "*" in loc:
            report.error(child(path, "locality"), problem or f"locality {loc!r} may not contain a wildcard")


def check_workload_entry(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    _check_workload(spec, "spec", report, service_ports=None, allow_fqdn=True)


def check_service_entry(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    selector = spec.get("workloadSelector")
    if selector is not None and spec.get("endpoints") is not None:
        report.error("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    if isinstance(selector, Mapping):
        w.check_selector(selector.get("labels", {}), "spec.workloadSelector.labels", report)
    hosts = spec.get("hosts") or []
    if "hosts" in spec and not hosts:
        report.error("spec.hosts", "service entry must have at least one host")
    for i, h in enumerate(hosts):
        w.check_host(h, child("spec.hosts", i), report, allow_star=False, allow_ip=False)
    cidr = False
    for i, a in enumerate(spec.get("addresses") or []):
        cidr = cidr or (isinstance(a, str) and "/" in a)
        w.check_ip_or_cidr(a, child("spec.addresses", i), report)
    resolution = spec.get("resolution", "NONE")
    if cidr and resolution not in ("NONE", "STATIC"):
        report.error("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types")
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(spec.get("ports") or []):
        if not isinstance(port, Mapping):
            continue
        p = child("spec.ports", i)
        name, number = port.get("name"), port.get("number")
        if isinstance(name, str):
            if name in names:
                report.error(child(p, "name"), f"service entry port name {name!r} already defined")
            names.add(name)
            _check_port_name(name, child(p, "name"), report)
        if isinstance(number, int):
            if number in numbers:
                report.error(child(p, "number"), f"service entry port {number} already defined")
            numbers.add(number)
            if not 1 <= number <= 65535:
                report.error(child(p, "number"), f"port number {number} is out of range 1-65535")
        target = port.get("targetPort")
        if isinstance(target, int) and target and not 1 <= target <= 65535:
            report.error(child(p, "targetPort"), f"port number {target} is out of range 1-65535")
        check_protocol(port.get("protocol"), child(p, "protocol"), report)
        if not spec.get("addresses") and port.get("protocol", "TCP") in ("", "TCP"):
            report.warn(p, "addresses are required for ports serving TCP (or unset) protocol when IP "
                           "Autoallocation is not enabled")
    endpoints = spec.get("endpoints") or []
    if resolution == "NONE":
        if endpoints:
            report.error("spec.endpoints", "no endpoints should be provided for resolution type none")
        if selector is not None:
            report.warn("spec.workloadSelector", "workloadSelector should not be set when resolution mode is NONE")
    elif resolution == "STATIC":
        for i, ep in enumerate(endpoints):
            if isinstance(ep, Mapping):
                _check_workload(ep, child("spec.endpoints", i), report, service_ports=names, allow_fqdn=False)
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not endpoints:
            for i, h in enumerate(hosts):
                if isinstance(h, str) and (h.startswith("*") or w.dns_domain_problem(h, wildcard=False)):
                    report.error(child("spec.hosts", i), f"hosts must be FQDN if no endpoints are provided for "
                                                         f"resolution mode {resolution}")
        if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            report.error("spec.endpoints", f"there must only be 0 or 1 endpoint for resolution mode {resolution}")
        for i, ep in enumerate(endpoints):
            if isinstance(ep, Mapping):
                _check_workload(ep, child("spec.endpoints", i), report, service_ports=names, allow_fqdn=True)
    if resolution != "NONE" and len(hosts) > 1:
        for port in spec.get("ports") or []:
            proto = str(port.get("protocol", "TCP")).upper() if isinstance(port, Mapping) else "TCP"
            if proto not in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY", "HTTPS", "TLS"):
                report.error("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    w.check_export_to(namespace, spec.get("exportTo"), "spec.exportTo", report, service_entry=True)


# -- Gateway -----------------------------------------------------------------------------------
SERVER_TLS = Obj({
    "httpsRedirect": Bool(), "mode": Enum("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL",
                                          "OPTIONAL_MUTUAL"),
    "serverCertificate": Str(), "privateKey": Str(), "caCertificates": Str(), "caCrl": Str(),
    "credentialName": Str(), "credentialNames": STRS,
    "tlsCertificates": ListOf(Obj({"serverCertificate": Str(), "privateKey": Str(), "caCertificates": Str()})),
    "subjectAltNames": STRS, "verifyCertificateSpki": STRS, "verifyCertificateHash": STRS,
    "minProtocolVersion": Enum("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"),
    "maxProtocolVersion": Enum("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"), "cipherSuites": STRS,
})
GATEWAY = Obj({
    "servers": ListOf(Obj({
        "port": Obj({"number": UInt32(), "protocol": Str(), "name": Str(), "targetPort": UInt32()},
                    required=["number", "protocol", "name"]),
        "bind": Str(), "hosts": STRS, "tls": SERVER_TLS, "defaultEndpoint": Str(), "name": Str(),
    }, required=["port", "hosts"])),
    "selector": STR_MAP,
})
_TLS_PROTOCOLS = ("HTTPS", "TLS")
_HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY")


def _check_server_tls(tls: Mapping[str, Any], path: str, report: Report) -> None:
    mode = tls.get("mode", "PASSTHROUGH")
    sources = sum(1 for present in (tls.get("serverCertificate") and tls.get("privateKey"), tls.get("credentialName"),
                                    tls.get("credentialNames"), tls.get("tlsCertificates")) if present)
    if mode == "ISTIO_MUTUAL":
        for field in ("serverCertificate", "privateKey", "caCertificates", "tlsCertificates", "credentialName",
                      "credentialNames"):
            if tls.get(field):
                report.error(child(path, field), f"ISTIO_MUTUAL TLS cannot have associated {field}")
        return
    if sources > 1:
        report.error(path, "only one of credential_name, credential_names, server_certificate/private_key, "
                           "tls_certificates should be specified")
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and not (tls.get("credentialName") or
                                                                  tls.get("credentialNames")):
        prefix = "SIMPLE TLS" if mode == "SIMPLE" else "MUTUAL TLS"
        if mode != "SIMPLE" and not tls.get("caCertificates"):
            report.error(child(path, "caCertificates"), f"{prefix} requires a client CA bundle")
        certs = tls.get("tlsCertificates") or [tls]
        for c in certs:
            if isinstance(c, Mapping):
                if not c.get("serverCertificate"):
                    report.error(child(path, "serverCertificate"), f"{prefix} requires a server certificate")
                if not c.get("privateKey"):
                    report.error(child(path, "privateKey"), f"{prefix} requires a private key")
    if tls.get("caCrl") and mode == "SIMPLE":
        report.error(child(path, "caCrl"), "CRL is not supported with SIMPLE TLS")


def _check_namespace_host(value: Any, path: str, report: Report) -> None:
    if not isinstance(value, str):
        return
    ns, sep, host = value.rpartition("/")
    if sep and ns not in ("*", ".", "~") and not is_dns1123_label(ns):
        report.error(path, f"invalid namespace value {ns!r} in host {value!r}")
    if host != "*":
        w.check_host(host, path, report, allow_ip=True)


def check_gateway(namespace: str, name: str, spec: Mapping[str, Any], report: Report) -> None:
    if not is_dns1123_label(name):
        report.error("metadata.name", f"invalid gateway name: {name!r}")
    servers = spec.get("servers") or []
    if not servers:
        report.error("spec.servers", "gateway must have at least one server")
    port_names: set[str] = set()
    for i, s in enumerate(servers):
        if not isinstance(s, Mapping):
            continue
        p = child("spec.servers", i)
        hosts = s.get("hosts")
        if hosts is not None and not hosts:
            report.error(child(p, "hosts"), "server config must contain at least one host")
        for j, h in enumerate(hosts or []):
            _check_namespace_host(h, child(child(p, "hosts"), j), report)
        port = s.get("port")
        proto = ""
        if isinstance(port, Mapping):
            proto = str(port.get("protocol", "")).upper()
            check_protocol(port.get("protocol"), child(child(p, "port"), "protocol"), report)
            number = port.get("number")
            if isinstance(number, int) and not 1 <= number <= 65535 and not str(s.get("bind", "")).startswith(
                    "unix://"):
                report.error(child(child(p, "port"), "number"), f"port number {number} is out of range 1-65535")
            if port.get("targetPort"):
                report.error(child(child(p, "port"), "targetPort"), "targetPort has no impact on Gateways")
            pname = port.get("name")
            if isinstance(pname, str):
                if pname in port_names:
                    report.error(child(child(p, "port"), "name"),
                                 f"port names in servers must be unique: duplicate name {pname}")
                port_names.add(pname)
        bind = s.get("bind")
        if isinstance(bind, str) and bind and not bind.startswith("unix://") and not w.is_ip(bind):
            report.error(child(p, "bind"), f"{bind} is not a valid IP")
        tls = s.get("tls")
        if proto in _TLS_PROTOCOLS and tls is None:
            report.error(child(p, "tls"), "server must have TLS settings for HTTPS/TLS protocols")
        elif proto and proto not in _TLS_PROTOCOLS and isinstance(tls, Mapping):
            if proto not in _HTTP_PROTOCOLS:
                report.error(child(p, "tls"), "server cannot have TLS settings for non HTTPS/TLS ports")
            elif any(tls.get(k) for k in ("caCertificates", "privateKey", "serverCertificate")) or (
                    tls.get("mode") not in (None, "PASSTHROUGH")):
                report.error(child(p, "tls"), "server cannot have TLS settings for plain text HTTP ports")
        if isinstance(tls, Mapping):
            _check_server_tls(tls, child(p, "tls"), report)
            if tls.get("httpsRedirect") and proto not in _HTTP_PROTOCOLS:
                report.warn(child(child(p, "tls"), "httpsRedirect"),
                            "tls.httpsRedirect should only be used with http servers")
    w.check_labels(spec.get("selector"), "spec.selector", report)


__all__ = [
    "DESTINATION_RULE",
    "GATEWAY",
    "SERVICE_ENTRY",
    "VIRTUAL_SERVICE",
    "WORKLOAD_ENTRY",
    "check_destination_rule",
    "check_gateway",
    "check_service_entry",
    "check_virtual_service",
    "check_workload_entry",
]
