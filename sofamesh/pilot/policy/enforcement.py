"""Which fields of which resource a connected proxy enforces: the one table of it.

``ENFORCED`` says (a field path without indices, as ``spec`` shows it:
``http.route.destination.subset``, and who enforces it: ``sofamesh`` sidecars, ``envoy``,
proxyless ``grpc``). Every other field Pilot accepts is stored and validated only; ``sofamesh
analyze`` and ``docs/policy.md`` report it as such, never dropping it silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sofamesh.pilot.policy.kinds import KINDS, Kind
from sofamesh.pilot.policy.resource import Resource
from sofamesh.pilot.policy.schema import Bool, Duration, Enum, Int, ListOf, MapOf, Node, Num, Obj, Str

ENFORCERS = ("sofamesh", "envoy", "grpc")
_ALL = ("sofamesh", "envoy", "grpc")
_PROXIES = ("sofamesh", "envoy")
_ENVOY = ("envoy",)
_SIDECAR = ("sofamesh",)


def _under(prefix: str, paths: str, who: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {f"{prefix}.{p}" if prefix else p: who for p in paths.split()}


# Each entry is what a test proves with real clients (tests/integration/policy/): bookinfo and the
# HTTP field tests through Envoy 1.40 and a sofamesh sidecar, the proxyless grpcio split, header
# match and faults, the MetaRouter tests with dubbo2.js / @dubbo.ts and sofa-rpc-node. DestinationRule
# connection pools and outlier detection are written for Envoy, which enforces them; the sofamesh
# sidecar's column for them comes with tests of its resilience modules through Pilot.
_TRAFFIC_POLICY_ENVOY = """
    loadBalancer loadBalancer.simple
    loadBalancer.consistentHash.httpCookie loadBalancer.consistentHash.httpCookie.name
    loadBalancer.consistentHash.httpCookie.path loadBalancer.consistentHash.httpCookie.ttl
    loadBalancer.consistentHash.useSourceIp loadBalancer.consistentHash.httpQueryParameterName
    connectionPool connectionPool.tcp connectionPool.tcp.maxConnections connectionPool.tcp.connectTimeout
    connectionPool.tcp.tcpKeepalive connectionPool.tcp.tcpKeepalive.probes connectionPool.tcp.tcpKeepalive.time
    connectionPool.tcp.tcpKeepalive.interval connectionPool.tcp.maxConnectionDuration connectionPool.http
    connectionPool.http.http1MaxPendingRequests connectionPool.http.http2MaxRequests
    connectionPool.http.maxRequestsPerConnection connectionPool.http.maxRetries connectionPool.http.idleTimeout
    connectionPool.http.maxConcurrentStreams
    outlierDetection outlierDetection.consecutiveErrors outlierDetection.splitExternalLocalOriginErrors
    outlierDetection.consecutiveLocalOriginFailures outlierDetection.consecutiveGatewayErrors
    outlierDetection.consecutive5xxErrors outlierDetection.interval outlierDetection.baseEjectionTime
    outlierDetection.maxEjectionPercent outlierDetection.minHealthPercent
"""
# tests/integration/policy/test_locality_lb.py: an 80/20 distribute, failover to the other zone when
# the proxy's zone stops, failoverPriority by a label, and a newcomer's small share in its warmup
# window, on both proxies; failover from the proxies' region to a named one before the others.
# consistentHash on a header: Envoy for HTTP (bookinfo-era tests), the
# sidecar for an RPC attribute with ringHash and maglev (tests/integration/policy/test_rpc_consistent_hash.py).
_TRAFFIC_POLICY_PROXIES = """
    loadBalancer.localityLbSetting loadBalancer.localityLbSetting.enabled loadBalancer.localityLbSetting.distribute
    loadBalancer.localityLbSetting.distribute.from loadBalancer.localityLbSetting.distribute.to
    loadBalancer.localityLbSetting.failoverPriority loadBalancer.warmupDurationSecs
    loadBalancer.localityLbSetting.failover loadBalancer.localityLbSetting.failover.from
    loadBalancer.localityLbSetting.failover.to
    loadBalancer.consistentHash loadBalancer.consistentHash.httpHeaderName
    loadBalancer.consistentHash.ringHash loadBalancer.consistentHash.ringHash.minimumRingSize
    loadBalancer.consistentHash.maglev loadBalancer.consistentHash.maglev.tableSize
"""
_DR_TLS = "tls tls.mode tls.caCertificates tls.clientCertificate tls.privateKey tls.sni tls.subjectAltNames"
_PORT_LEVEL = "portLevelSettings portLevelSettings.port portLevelSettings.port.number"


def _traffic_policy(prefix: str) -> dict[str, tuple[str, ...]]:
    out = {prefix: _ENVOY, **_under(prefix, _TRAFFIC_POLICY_ENVOY, _ENVOY), **_under(prefix, _PORT_LEVEL, _ENVOY)}
    out.update(_under(f"{prefix}.portLevelSettings", _TRAFFIC_POLICY_ENVOY, _ENVOY))
    out.update(_under(prefix, _TRAFFIC_POLICY_PROXIES, _PROXIES))
    out.update(_under(f"{prefix}.portLevelSettings", _TRAFFIC_POLICY_PROXIES, _PROXIES))
    return out


ENFORCED: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "VirtualService": {
        **_under("", "hosts http", _ALL),
        **_under("http", "match match.headers match.headers.exact route route.destination route.destination.host "
                         "route.destination.subset route.weight", _ALL),
        **_under("http", "name match.uri match.uri.exact match.uri.prefix match.uri.regex match.method "
                         "match.method.exact match.queryParams match.queryParams.exact timeout "
                         "rewrite rewrite.uri headers headers.request headers.request.set headers.request.remove "
                         "headers.response headers.response.add mirror mirror.host mirror.subset "
                         "redirect redirect.uri redirect.redirectCode directResponse directResponse.status "
                         "directResponse.body directResponse.body.string", _PROXIES),
        # aborts: bookinfo on both proxies; test_proxyless_policy.py with grpcio (a gRPC status, and an
        # HTTP status at 30 %)
        **_under("http", "fault fault.abort fault.abort.httpStatus fault.abort.percentage "
                         "fault.abort.percentage.value", _ALL),
        **_under("http", "fault.abort.grpcStatus", ("grpc",)),
        # tests/integration/policy/test_http_match_fields.py
        **_under("http", "match.withoutHeaders match.withoutHeaders.exact match.authority match.authority.exact "
                         "match.scheme match.scheme.exact match.sourceLabels match.port rewrite.authority "
                         "rewrite.uriRegexRewrite "
                         "rewrite.uriRegexRewrite.match rewrite.uriRegexRewrite.rewrite mirrorPercentage "
                         "mirrorPercentage.value route.headers route.headers.request route.headers.request.set",
                 _PROXIES),
        # tests/integration/policy/test_http_more_fields.py: retries hide every other 503 and a stalled
        # try, per-destination request / response set, add, remove on a 50/50 split, the match forms,
        # route-level header add / set / remove, mirrors at 50 %, redirect parts, a body as bytes
        **_under("http", "retries retries.attempts retries.perTryTimeout retries.retryOn "
                         "route.headers.request.add route.headers.request.remove route.headers.response "
                         "route.headers.response.set route.headers.response.add route.headers.response.remove "
                         "match.ignoreUriCase match.authority.prefix match.authority.regex match.scheme.prefix "
                         "match.scheme.regex match.withoutHeaders.regex match.withoutHeaders.prefix "
                         "match.method.prefix match.method.regex match.headers.prefix match.headers.regex "
                         "match.queryParams.prefix match.queryParams.regex headers.request.add "
                         "headers.response.set headers.response.remove mirrors mirrors.destination "
                         "mirrors.destination.host mirrors.destination.subset mirrors.percentage "
                         "mirrors.percentage.value redirect.authority redirect.port redirect.scheme "
                         "directResponse.body.bytes", _PROXIES),
        # tests/integration/policy/test_cors.py: preflights and actual requests, same answers from both
        **_under("http", "corsPolicy corsPolicy.allowOrigins corsPolicy.allowOrigins.exact "
                         "corsPolicy.allowOrigins.prefix corsPolicy.allowOrigins.regex corsPolicy.allowMethods "
                         "corsPolicy.allowHeaders corsPolicy.exposeHeaders corsPolicy.maxAge "
                         "corsPolicy.allowCredentials corsPolicy.unmatchedPreflights", _PROXIES),
        # test_proxyless_policy.py::test_proxyless_grpc_delays_calls_as_the_virtual_service_fault_says
        **_under("http", "fault.delay fault.delay.fixedDelay fault.delay.percentage fault.delay.percentage.value",
                 _ALL),
        # tests/integration/policy/test_export_to.py: proxies in two namespaces (node metadata NAMESPACE)
        "exportTo": _PROXIES,
        # tests/integration/policy/test_tcp_routes.py: 200 connections through each proxy's outbound
        # TCP listener split 80/20 between two TCP servers (subsets of a ServiceEntry)
        "tcp": _PROXIES,
        **_under("tcp", "match match.port route route.destination route.destination.host "
                        "route.destination.subset route.weight", _PROXIES),
        # ... and routes picked per proxy by the node's LABELS / NAMESPACE and its listener address
        **_under("tcp", "match.sourceLabels match.sourceNamespace match.destinationSubnets", _PROXIES),
        # tests/integration/policy/test_delegate.py: a root route delegating to another namespace's
        # VirtualService, merged matches, inherited headers, short hosts in the delegate's namespace
        **_under("http", "delegate delegate.name delegate.namespace", _PROXIES),
        # tests/integration/policy/test_gateway.py: http and tls routes bound to a Gateway (NAME and NS/NAME)
        "gateways": _PROXIES,
        # test_tcp_routes.py: ClientHellos with four server names through each proxy: exact before wildcard
        "tls": _PROXIES,
        **_under("tls", "match match.sniHosts route route.destination route.destination.host "
                        "route.destination.subset", _PROXIES),
    },
    "DestinationRule": {
        **_under("", "host subsets subsets.name subsets.labels", _ALL),
        **_traffic_policy("trafficPolicy"),
        **_traffic_policy("subsets.trafficPolicy"),
        # tests/integration/pilot/test_destination_rule_tls.py, against a real TLS server through both
        # proxies: SIMPLE (CA file, sni, subjectAltNames; a wrong one refused) at the top, MUTUAL (client
        # certificate and key) in a portLevelSettings entry
        **_under("trafficPolicy", _DR_TLS, _PROXIES),
        **_under("trafficPolicy.portLevelSettings", _DR_TLS, _PROXIES),
        # test_destination_rule_subsets_with_istio_mutual_and_disable_against_a_strict_sidecar:
        # a subset's ISTIO_MUTUAL reaches a STRICT sofamesh sidecar, its DISABLE is plaintext (refused, then
        # taken under PERMISSIVE), from a sofamesh sidecar and an Envoy
        **_under("subsets.trafficPolicy", "tls tls.mode", _PROXIES),
        "exportTo": _PROXIES,  # tests/integration/policy/test_export_to.py
    },
    "ServiceEntry": {**_under("", "hosts ports ports.number ports.name ports.protocol resolution workloadSelector "
                                  "workloadSelector.labels", _SIDECAR),
                     # a loopback address is where the sidecar listens for a TCP port (test_tcp_routes.py)
                     "addresses": _SIDECAR,
                     "exportTo": _PROXIES},  # tests/integration/policy/test_export_to.py
    "WorkloadEntry": _under("", "address ports labels", _SIDECAR),
    # tests/integration/policy/test_gateway.py: an Envoy and a sofamesh proxy as gateway nodes of one
    # Pilot: two HTTPS servers on one port (SNI, SIMPLE and MUTUAL with files), httpsRedirect on the
    # HTTP port, PASSTHROUGH to a TLS server by a bound tls route, selected by labels
    "Gateway": _under("", "servers servers.port servers.port.number servers.port.protocol servers.port.name "
                          "servers.hosts servers.tls servers.tls.httpsRedirect servers.tls.mode "
                          "servers.tls.serverCertificate servers.tls.privateKey servers.tls.caCertificates "
                          "servers.tls.credentialName selector", _PROXIES),
    # Security: enforced on the inbound listeners Pilot sends sidecars holding a certificate (an Envoy
    # gets its HTTP, gRPC and Triple ones). tests/integration/pilot/test_inbound_security.py proves the mTLS modes
    # at mesh, workload and port level, ALLOW / DENY by principal, method, path and port with
    # HTTP, grpcio, sofa-rpc-node and dubbo2.js, and a RequestAuthentication's principal and claims
    # (``when``) deciding an ALLOW; the generation of every listed field is checked by
    # tests/unit/pilot/xds/test_security_generation.py, and the filters they become by their own tests.
    # An Envoy sidecar (test_an_envoy_sidecar_enforces_authorization_policy_with_envoys_rbac_filter)
    # is proven for STRICT, for the AuthorizationPolicy fields marked _PROXIES and for the
    # RequestAuthentication fields marked _PROXIES (its JWT filter).
    "PeerAuthentication": {**_under("", "selector selector.matchLabels portLevelMtls portLevelMtls.mode", _SIDECAR),
                           **_under("", "mtls mtls.mode", _PROXIES)},
    # test_service_accounts_remote_ip_blocks_and_target_ref_decide_through_real_sidecars, with a
    # sofamesh sidecar and an Envoy as the provider's: serviceAccounts, remoteIpBlocks (the caller's
    # address as the provider sees it) and a targetRef to a Service selecting the workloads serving it.
    "AuthorizationPolicy": {
        **_under("", "selector selector.matchLabels rules action targetRef targetRef.group targetRef.kind "
                     "targetRef.name", _PROXIES),
        **_under("rules.from.source", "serviceAccounts remoteIpBlocks", _PROXIES),
        **_under("rules", "from from.source to to.operation", _PROXIES),
        **_under("rules", "when.notValues", _SIDECAR),
        # test_an_envoy_sidecar_verifies_tokens_with_keys_pilot_fetched_from_a_jwks_uri:
        # request.auth.claims[...] (nested, list or string), audiences, presenter and "*/sub" on Envoy
        **_under("rules", "when when.key when.values", _PROXIES),
        **_under("rules.from.source", "principals notNamespaces", _PROXIES),
        **_under("rules.from.source", "notPrincipals notRequestPrincipals namespaces ipBlocks notIpBlocks", _SIDECAR),
        # test_request_authentication_on_an_envoy_sidecar_with_envoys_jwt_filter (Envoy's jwt_authn)
        **_under("rules.from.source", "requestPrincipals", _PROXIES),
        **_under("rules.to.operation", "methods paths", _PROXIES),
        **_under("rules.to.operation", "hosts notHosts ports notPorts notMethods notPaths", _SIDECAR),
    },
    "RequestAuthentication": {
        **_under("", "selector selector.matchLabels jwtRules", _PROXIES),
        **_under("jwtRules", "issuer audiences jwks", _PROXIES),
        # the Envoy test above: jwksUri fetched by Pilot and inlined, fromHeaders / fromParams,
        # outputPayloadToHeader (Envoy's JWT filter only: the sidecar's reads headers)
        **_under("jwtRules", "jwksUri fromHeaders fromHeaders.name fromHeaders.prefix", _PROXIES),
        **_under("jwtRules", "fromParams outputPayloadToHeader", _ENVOY),
    },
    "MetaRouter": {
        **_under("", "hosts routes", _SIDECAR),
        **_under("routes", "name match match.attributes match.attributes.exact route route.destination "
                           "route.destination.host route.destination.subset route.weight mirror mirror.host "
                           "mirror.subset mirrorPercentage mirrorPercentage.value requestMutation "
                           "requestMutation.key requestMutation.value responseMutation responseMutation.key "
                           "responseMutation.value", _SIDECAR),
        # the route's retry_policy (tests/unit/pilot/xds/test_policy_generation.py), which the proxy applies to
        # RPC as tests/conformance/test_rpc_resilience.py shows with sofa-rpc-node and dubbo2.js providers killed
        **_under("routes", "retries retries.attempts retries.backoff retries.perTryTimeout retries.retryOn", _SIDECAR),
        # tests/integration/policy/test_metarouter_rate_limit.py: dubbo2.js and sofa-rpc-node bursts
        **_under("", "localRateLimit localRateLimit.tokenBucket localRateLimit.conditions", _SIDECAR),
        **_under("localRateLimit.tokenBucket", "maxTokens tokensPerFill fillInterval", _SIDECAR),
        **_under("localRateLimit.conditions", "match match.attributes match.attributes.exact tokenBucket "
                                              "tokenBucket.maxTokens tokenBucket.tokensPerFill "
                                              "tokenBucket.fillInterval", _SIDECAR),
        "exportTo": _SIDECAR,  # tests/integration/policy/test_metarouter_export_to.py: sidecars in two namespaces
    },
    # tests/integration/policy/test_gateway_credentials.py: a Secret's certificate (and, for MUTUAL, its ca.crt)
    # served over SDS to an Envoy and a sofamesh gateway, rotated through the API; stringData is merged into
    # data at admission (tests/unit/pilot/policy/test_credentials.py). immutable is stored, not enforced.
    "Secret": _under("", "type data stringData", _PROXIES),
}
"""kind -> field path -> who enforces it (as the integration tests prove)."""


def enforcers(kind: str, path: str) -> tuple[str, ...]:
    return ENFORCED.get(kind, {}).get(path, ())


def _inner(node: Node) -> Node:
    while isinstance(node, ListOf | MapOf):
        node = node.item if isinstance(node, ListOf) else node.value
    return node


def _leaves(value: Any, node: Node, prefix: str) -> Iterator[str]:
    inner = _inner(node)
    if not isinstance(inner, Obj):
        yield prefix
        return
    items: list[Any]
    if isinstance(node, ListOf):
        items = value if isinstance(value, list) else []
    elif isinstance(node, MapOf):
        items = list(value.values()) if isinstance(value, Mapping) else []
    else:
        items = [value]
    for item in items:
        if not isinstance(item, Mapping):
            continue
        for k, v in item.items():
            if k in inner.fields and v is not None:
                yield from _leaves(v, inner.fields[k], f"{prefix}.{k}" if prefix else k)


def used_fields(kind: Kind, spec: Mapping[str, Any]) -> list[str]:
    """The leaf field paths ``spec`` sets, without indices, sorted and unique."""
    return sorted(set(_leaves(spec, kind.schema, "")))


def unenforced(resource: Resource) -> list[str]:
    """The fields ``resource`` sets that no connected proxy enforces yet."""
    kind = next(k for k in KINDS if k.kind == resource.kind and k.group == resource.group)
    return [p for p in used_fields(kind, resource.spec) if not enforcers(resource.kind, p)]


def _shape(node: Node) -> str:
    if isinstance(node, ListOf):
        return f"list of {_shape(node.item)}"
    if isinstance(node, MapOf):
        return f"map of {_shape(node.value)}"
    if isinstance(node, Enum):
        return "enum: " + " ".join(node.values)
    if isinstance(node, Int):
        return "uint32" if node.lo == 0 else "int32"
    return {Obj: "object", Str: "string", Num: "number", Bool: "boolean", Duration: "duration"}.get(
        type(node), type(node).__name__)


def field_table(kind: Kind) -> list[tuple[str, str]]:
    """Every field path of ``kind`` and its type (for docs/policy.md)."""
    return [(path, _shape(node)) for path, node in kind.schema.paths()]


__all__ = ["ENFORCED", "ENFORCERS", "enforcers", "field_table", "unenforced", "used_fields"]
