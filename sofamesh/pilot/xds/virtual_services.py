"""VirtualService ``http`` routes -> Envoy routes, as Istio's ``route.go`` translates them.

Each ``http`` entry becomes one Envoy route per ``match`` (matches are OR'ed; none means every
request), in order, first match wins:
- match: ``uri`` (path / prefix / safe_regex, ``ignoreUriCase``), ``headers``, ``withoutHeaders``
  (inverted), ``method`` / ``authority`` / ``scheme`` (the ``:method`` / ``:authority`` /
  ``:scheme`` pseudo-headers), ``queryParams``; ``port`` puts the route only in that port's virtual
  host; ``sourceLabels`` / ``sourceNamespace`` keep it only for nodes whose metadata ``LABELS`` /
  ``NAMESPACE`` (Istio's node metadata keys) match; ``gateways`` other than ``mesh`` leave it out.
- action: ``route`` (one cluster, or weighted clusters; ``subset`` -> ``outbound|PORT|SUBSET|NAME``),
  ``redirect``, ``directResponse``; ``timeout`` (none: no timeout, as Istio), ``retries``,
  ``fault`` (per-route config of ``envoy.filters.http.fault``), ``mirror``/``mirrors`` with their
  percentage, ``headers`` (route-level, and per destination), ``corsPolicy`` (per-route config of
  ``envoy.filters.http.cors``; not for proxyless gRPC), ``rewrite`` (uri -> prefix_rewrite,
  uriRegexRewrite -> regex_rewrite, authority -> host_rewrite_literal), and the hash policy of the
  destination's consistentHash load balancer.
A destination no registry knows, on a port the service does not have, or naming a subset no
DestinationRule defines is left out (``sofamesh analyze`` reports it as IST0101); a route left
with no destination answers 503, so one bad reference never breaks the whole route table.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from xds.type.v3 import typed_struct_pb2

from sofamesh.core.xds.route_filters import FILTER_TYPE_URL, route_filter_key
from sofamesh.pilot.policy.applied import service_visible
from sofamesh.pilot.policy.duration import parse_duration
from sofamesh.pilot.policy.transcoders import transcoders_of
from sofamesh.pilot.xds.destination_rules import effective_policy, hash_policies, subset_cluster_name

if TYPE_CHECKING:
    from sofamesh.pilot.model import MeshModel
    from sofamesh.pilot.policy.applied import PolicySnapshot
    from sofamesh.pilot.policy.resource import Resource

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_REDIRECT_CODES = {301: rc.RedirectAction.MOVED_PERMANENTLY, 302: rc.RedirectAction.FOUND,
                   303: rc.RedirectAction.SEE_OTHER, 307: rc.RedirectAction.TEMPORARY_REDIRECT,
                   308: rc.RedirectAction.PERMANENT_REDIRECT}
_GRPC_CODES = {name: i for i, name in enumerate((
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"))}


@dataclass(frozen=True, slots=True)
class Source:
    """The node the routes are for: its labels and namespace (``sourceLabels``, ``sourceNamespace``)."""

    labels: frozenset[tuple[str, str]] = frozenset()
    namespace: str = ""

    @classmethod
    def of(cls, metadata: Mapping[str, Any]) -> Source:
        labels = metadata.get("LABELS") or {}
        if not isinstance(labels, Mapping):
            labels = {}
        return cls(frozenset((str(k), str(v)) for k, v in labels.items()), str(metadata.get("NAMESPACE", "")))


def _duration(text: str) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(round(parse_duration(text) * 1000))
    return d


def _percent(value: float) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=max(0, min(1_000_000, round(value * 10_000))),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def _string_matcher(m: Mapping[str, Any]) -> string_pb2.StringMatcher:
    if "prefix" in m:
        return string_pb2.StringMatcher(prefix=m["prefix"])
    if "regex" in m:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m["regex"]))
    return string_pb2.StringMatcher(exact=str(m.get("exact", "")))


def _header(name: str, m: Mapping[str, Any] | None, invert: bool = False) -> rc.HeaderMatcher:
    h = rc.HeaderMatcher(name=name.lower(), invert_match=invert)
    if not m or not any(k in m for k in ("exact", "prefix", "regex")):
        h.present_match = True
    else:
        h.string_match.CopyFrom(_string_matcher(m))
        # withoutHeaders: a request without the header does not carry that value, so it matches
        # (Envoy would otherwise fail an absent header before inverting)
        h.treat_missing_header_as_empty = invert
    return h


def _route_match(m: Mapping[str, Any]) -> rc.RouteMatch:
    out = rc.RouteMatch()
    uri = m.get("uri") or {}
    if "exact" in uri:
        out.path = uri["exact"]
    elif "regex" in uri:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=uri["regex"]))
    else:
        out.prefix = uri.get("prefix") or "/"
    if m.get("ignoreUriCase"):
        out.case_sensitive.value = False
    for pseudo in ("method", "authority", "scheme"):
        if m.get(pseudo):
            out.headers.append(_header(f":{pseudo}", m[pseudo]))
    for name, hm in sorted((m.get("headers") or {}).items()):
        out.headers.append(_header(name, hm))
    for name, hm in sorted((m.get("withoutHeaders") or {}).items()):
        out.headers.append(_header(name, hm, invert=True))
    for name, qm in sorted((m.get("queryParams") or {}).items()):
        q = rc.QueryParameterMatcher(name=name)
        if qm and any(k in qm for k in ("exact", "prefix", "regex")):
            q.string_match.CopyFrom(_string_matcher(qm))
        else:
            q.present_match = True
        out.query_parameters.append(q)
    return out


def match_applies(m: Mapping[str, Any], port: int, source: Source,
                  gateways: frozenset[str] = frozenset({"mesh"})) -> bool:
    """Whether a route ``match`` (http, tcp or tls) applies to ``port`` for a node of ``source``:
    its ``port``, ``gateways`` (one of ``gateways``: ``mesh`` for sidecars, the names a gateway's
    Gateway goes by for it), ``sourceLabels`` and ``sourceNamespace``."""
    want_port = m.get("port")
    if want_port and int(want_port) != port:
        return False
    named = m.get("gateways")
    if named and not gateways.intersection(named):
        return False
    labels = m.get("sourceLabels") or {}
    if labels and not set(labels.items()) <= source.labels:
        return False
    ns = m.get("sourceNamespace")
    return not (ns and ns != source.namespace)


def _header_options(ops: Mapping[str, Any] | None) -> tuple[list[base_pb2.HeaderValueOption], list[str]]:
    if not ops:
        return [], []
    add = []
    for name, value in sorted((ops.get("set") or {}).items()):
        add.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value),
                                              append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    for name, value in sorted((ops.get("add") or {}).items()):
        add.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value),
                                              append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD))
    return add, list(ops.get("remove") or [])


def _mutate(target: Any, headers: Mapping[str, Any] | None) -> None:
    """Istio's ``headers`` (request / response set, add, remove) on a Route or a ClusterWeight."""
    for phase in ("request", "response"):
        add, remove = _header_options((headers or {}).get(phase))
        getattr(target, f"{phase}_headers_to_add").extend(add)
        getattr(target, f"{phase}_headers_to_remove").extend(remove)


class Destinations:
    """Resolves a destination (host, subset, port) to the cluster Pilot generates for it."""

    def __init__(self, snap: PolicySnapshot, mesh: MeshModel, namespace: str) -> None:
        self.snap, self.mesh, self.namespace = snap, mesh, namespace

    def cluster(self, dest: Mapping[str, Any]) -> tuple[str, str, int] | None:
        """(cluster name, service name, port), or None when nothing serves it."""
        svc_name = self.snap.service_for(str(dest.get("host", "")), self.namespace)
        svc = self.mesh.service(svc_name) if svc_name else None
        if svc is None or svc_name is None or not service_visible(svc, self.snap.namespace):
            return None  # nothing serves it, or not for this proxy (a ServiceEntry's exportTo)
        port = int((dest.get("port") or {}).get("number") or svc.port)
        if port not in svc.ports:
            return None
        subset = dest.get("subset")
        if not subset:
            return f"outbound|{port}|{svc_name}", svc_name, port
        if self.snap.subset_labels(svc_name, subset) is None:
            return None
        return subset_cluster_name(port, subset, svc_name), svc_name, port

    def hash_policy(self, dest: Mapping[str, Any], resolved: tuple[str, str, int]) -> list[Any]:
        _cluster, svc, port = resolved
        sp = self.snap.for_service(svc)
        if sp.destination_rule is None:
            return []
        subset = sp.subset(dest["subset"]) if dest.get("subset") else None
        return hash_policies(effective_policy(sp.destination_rule.spec, port, subset))


def _retry_policy(retries: Mapping[str, Any]) -> rc.RetryPolicy | None:
    attempts = int(retries.get("attempts", 2))
    if attempts <= 0:
        return None
    on = [p.strip() for p in str(retries.get("retryOn") or _DEFAULT_RETRY_ON).split(",") if p.strip()]
    codes = [int(p) for p in on if p.isdigit()]
    conditions = [p for p in on if not p.isdigit()]
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    rp = rc.RetryPolicy(retry_on=",".join(conditions), num_retries=wrappers_pb2.UInt32Value(value=attempts),
                        retriable_status_codes=codes)
    if retries.get("perTryTimeout"):
        rp.per_try_timeout.CopyFrom(_duration(retries["perTryTimeout"]))
    if retries.get("backoff"):
        rp.retry_back_off.base_interval.CopyFrom(_duration(retries["backoff"]))
    if retries.get("retryIgnorePreviousHosts", True):
        predicate = any_pb2.Any()
        predicate.Pack(previous_hosts_pb2.PreviousHostsPredicate())
        rp.retry_host_predicate.append(rc.RetryPolicy.RetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts", typed_config=predicate))
        rp.host_selection_retry_max_attempts = 5
    return rp


def _fault(fault: Mapping[str, Any]) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    delay = fault.get("delay")
    if isinstance(delay, Mapping) and delay.get("fixedDelay"):
        d = common_fault_pb2.FaultDelay(fixed_delay=_duration(delay["fixedDelay"]))
        if isinstance(delay.get("percentage"), Mapping):
            d.percentage.CopyFrom(_percent(float(delay["percentage"].get("value", 0))))
        elif delay.get("percent") is not None:
            d.percentage.CopyFrom(_percent(float(delay["percent"])))
        else:
            d.percentage.CopyFrom(_percent(100))
        out.delay.CopyFrom(d)
    abort = fault.get("abort")
    if isinstance(abort, Mapping):
        a = fault_pb2.FaultAbort()
        if abort.get("httpStatus") is not None:
            a.http_status = int(abort["httpStatus"])
        elif abort.get("grpcStatus"):
            a.grpc_status = _GRPC_CODES.get(str(abort["grpcStatus"]).upper(), 14)
        if a.WhichOneof("error_type") is not None:
            pct = abort.get("percentage")
            a.percentage.CopyFrom(_percent(float(pct.get("value", 0)) if isinstance(pct, Mapping) else 100))
            out.abort.CopyFrom(a)
    return out


def _cors(policy: Mapping[str, Any]) -> cors_pb2.CorsPolicy:
    """Istio's ``corsPolicy`` as its ``TranslateCORSPolicy`` writes it: header values joined with ``,``,
    ``maxAge`` in whole seconds, the policy enabled for every request, ``unmatchedPreflights: IGNORE``
    answering a preflight from an origin not allowed instead of forwarding it."""
    out = cors_pb2.CorsPolicy()
    origins = policy.get("allowOrigins")
    if origins:
        out.allow_origin_string_match.extend(_string_matcher(o) for o in origins if isinstance(o, Mapping))
    else:
        out.allow_origin_string_match.extend(string_pb2.StringMatcher(exact=str(o))
                                             for o in policy.get("allowOrigin") or [])
    out.filter_enabled.default_value.CopyFrom(percent_pb2.FractionalPercent(numerator=100))
    if policy.get("allowCredentials") is not None:
        out.allow_credentials.value = bool(policy["allowCredentials"])
    out.allow_methods = ",".join(policy.get("allowMethods") or [])
    out.allow_headers = ",".join(policy.get("allowHeaders") or [])
    out.expose_headers = ",".join(policy.get("exposeHeaders") or [])
    if policy.get("maxAge"):
        out.max_age = str(int(parse_duration(policy["maxAge"])))
    if policy.get("unmatchedPreflights") == "IGNORE":
        out.forward_not_matching_preflights.value = False
    return out


def _mirrors(http: Mapping[str, Any], dests: Destinations) -> list[rc.RouteAction.RequestMirrorPolicy]:
    wanted: list[tuple[Mapping[str, Any], float]] = []
    if isinstance(http.get("mirror"), Mapping):
        pct = http.get("mirrorPercentage")
        if isinstance(pct, Mapping):
            value = float(pct.get("value", 0))
        elif http.get("mirrorPercent") is not None or http.get("mirror_percent") is not None:
            value = float(http.get("mirrorPercent", http.get("mirror_percent")))
        else:
            value = 100.0
        wanted.append((http["mirror"], value))
    for m in http.get("mirrors") or []:
        pct = m.get("percentage")
        wanted.append((m["destination"], float(pct.get("value", 0)) if isinstance(pct, Mapping) else 100.0))
    out = []
    for dest, value in wanted:
        resolved = dests.cluster(dest)
        if resolved is None:
            continue
        policy = rc.RouteAction.RequestMirrorPolicy(cluster=resolved[0])
        policy.runtime_fraction.default_value.CopyFrom(_percent(value))
        out.append(policy)
    return out


def _action(http: Mapping[str, Any], route: rc.Route, dests: Destinations) -> None:
    if isinstance(http.get("redirect"), Mapping):
        r = http["redirect"]
        ra = rc.RedirectAction(response_code=_REDIRECT_CODES.get(int(r.get("redirectCode") or 301),
                                                                 rc.RedirectAction.MOVED_PERMANENTLY))
        if r.get("uri"):
            ra.path_redirect = r["uri"]
        if r.get("authority"):
            ra.host_redirect = r["authority"]
        if r.get("port"):
            ra.port_redirect = int(r["port"])
        if r.get("scheme"):
            ra.scheme_redirect = r["scheme"]
        route.redirect.CopyFrom(ra)
        return
    if isinstance(http.get("directResponse"), Mapping):
        dr = http["directResponse"]
        action = rc.DirectResponseAction(status=int(dr["status"]))
        body = dr.get("body") or {}
        if "string" in body:
            action.body.inline_string = body["string"]
        elif "bytes" in body:
            action.body.inline_bytes = base64.b64decode(body["bytes"])
        route.direct_response.CopyFrom(action)
        return
    ra = rc.RouteAction()
    weighted: list[tuple[Mapping[str, Any], tuple[str, str, int], int]] = []
    for d in http.get("route") or []:
        dest = d.get("destination") or {}
        resolved = dests.cluster(dest)
        weight = int(d.get("weight", 0) or 0)
        if resolved is None or (weight == 0 and len(http.get("route") or []) > 1):
            continue
        weighted.append((d, resolved, weight))
    if not weighted:
        route.direct_response.CopyFrom(rc.DirectResponseAction(status=503))
        return
    if len(weighted) == 1:
        d, resolved, _w = weighted[0]
        ra.cluster = resolved[0]
        _mutate(route, d.get("headers"))
    else:
        for d, resolved, w in weighted:
            cw = rc.WeightedCluster.ClusterWeight(name=resolved[0], weight=wrappers_pb2.UInt32Value(value=w))
            _mutate(cw, d.get("headers"))
            ra.weighted_clusters.clusters.append(cw)
    ra.hash_policy.extend(dests.hash_policy(weighted[0][0].get("destination") or {}, weighted[0][1]))
    ra.timeout.CopyFrom(_duration(http["timeout"]) if http.get("timeout") else duration_pb2.Duration(seconds=0))
    if isinstance(http.get("retries"), Mapping):
        rp = _retry_policy(http["retries"])
        if rp is not None:
            ra.retry_policy.CopyFrom(rp)
    ra.request_mirror_policies.extend(_mirrors(http, dests))
    rw = http.get("rewrite") or {}
    if rw.get("uri"):
        ra.prefix_rewrite = rw["uri"]
    elif isinstance(rw.get("uriRegexRewrite"), Mapping):
        rr = rw["uriRegexRewrite"]
        ra.regex_rewrite.pattern.regex = rr.get("match", "")
        ra.regex_rewrite.substitution = rr.get("rewrite", "")
    if rw.get("authority"):
        ra.host_rewrite_literal = rw["authority"]
    route.route.CopyFrom(ra)


def http_routes(vs: Resource, snap: PolicySnapshot, mesh: MeshModel, port: int, source: Source,
                proxyless: bool = False, gateways: frozenset[str] = frozenset({"mesh"})) -> list[rc.Route]:
    """The Envoy routes of ``vs`` for the virtual host of the service's ``port``, for a node of
    ``source``; a ``delegate`` route stands for its delegate's routes (:mod:`..policy.delegate`).
    ``proxyless``: for gRPC's xDS client, which has no CORS filter (``corsPolicy`` is left out).
    ``gateways``: the names a match's ``gateways`` must include one of (a gateway's own names)."""
    dests = Destinations(snap, mesh, vs.namespace)
    transcoders = transcoders_of(vs.annotations)  # sofamesh.io/transcoders: route name -> {type, config}
    out: list[rc.Route] = []
    for hi, http in enumerate(snap.http_of(vs)):
        if not isinstance(http, Mapping) or http.get("delegate"):
            continue
        matches = http.get("match") or [{}]
        applicable = [m for m in matches if match_applies(m, port, source, gateways)]
        if not applicable:
            continue
        template = rc.Route()
        _action(http, template, dests)
        _mutate(template, http.get("headers"))
        if isinstance(http.get("fault"), Mapping) and template.HasField("route"):
            packed = any_pb2.Any()
            packed.Pack(_fault(http["fault"]))
            template.typed_per_filter_config[FAULT_FILTER].CopyFrom(packed)
        if isinstance(http.get("corsPolicy"), Mapping) and not proxyless:
            packed = any_pb2.Any()
            packed.Pack(_cors(http["corsPolicy"]))
            template.typed_per_filter_config[CORS_FILTER].CopyFrom(packed)
        transcoder = transcoders.get(str(http.get("name"))) if transcoders else None
        if transcoder is not None and template.HasField("route") and not proxyless:
            template.typed_per_filter_config[route_filter_key(str(transcoder["type"]))].CopyFrom(
                _route_filter(transcoder))
        name = http.get("name") or f"{vs.namespace}.{vs.name}.{hi}"
        for mi, m in enumerate(applicable):
            r = rc.Route()
            r.CopyFrom(template)
            r.name = name if len(applicable) == 1 else f"{name}.{m.get('name') or mi}"
            r.match.CopyFrom(_route_match(m))
            out.append(r)
    return out


def _route_filter(entry: Mapping[str, Any]) -> any_pb2.Any:
    """A route's own sofamesh filter as ``typed_per_filter_config``: an optional FilterConfig (an Envoy
    ignores it) around a TypedStruct ``sofamesh.config.filter.v1.Filter`` of ``{type, config}``."""
    value = struct_pb2.Struct()
    value.update({"type": entry["type"], "config": dict(entry.get("config") or {})})
    inner = any_pb2.Any()
    inner.Pack(typed_struct_pb2.TypedStruct(type_url=FILTER_TYPE_URL, value=value))
    packed = any_pb2.Any()
    packed.Pack(rc.FilterConfig(config=inner, is_optional=True))
    return packed


def fault_http_filter() -> Any:
    """The HCM-level fault filter (no fault of its own: each route's config says what to inject)."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    packed = any_pb2.Any()
    packed.Pack(fault_pb2.HTTPFault())
    return hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=packed)


def cors_http_filter() -> Any:
    """The HCM-level CORS filter (no policy of its own: each route's ``typed_per_filter_config`` has it)."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    packed = any_pb2.Any()
    packed.Pack(cors_pb2.Cors())
    return hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=packed)


__all__ = ["CORS_FILTER", "FAULT_FILTER", "Destinations", "Source", "cors_http_filter", "fault_http_filter",
           "http_routes", "match_applies"]
