"""Istio and Aeraki policy -> the xDS Pilot generates (routes, subset clusters, RPC routes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import any_pb2, json_format

from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.policy.documents import parse_stream
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.store import StoredDocument
from sofamesh.pilot.xds.generator import NodeInfo
from sofamesh.pilot.xds.generators import ClusterGenerator, EndpointGenerator, OutboundRouteGenerator
from sofamesh.pilot.xds.rpc import rpc_generators
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed

DATA = Path(__file__).parents[3] / "data"
NODE = NodeInfo("n1", user_agent="sofamesh")


def _docs(text: str, origin: str = "t.yaml") -> list[StoredDocument]:
    return [StoredDocument(Source(origin, d.document, d.line, d.lines), d.body) for d in parse_stream(text)]


def _bookinfo(*files: str, extra: str = "") -> tuple[MeshModel, AppliedPolicy, PolicyModel]:
    insts = [ServiceInstance("reviews", f"r{v}", "127.0.0.1", 9000 + v, labels={"version": f"v{v}"})
             for v in (1, 2, 3)]
    insts += [ServiceInstance("ratings", "ra1", "127.0.0.1", 9101, labels={"version": "v1"})]
    mesh = MeshModel([Fixed([Service("reviews", ports=(9080,)), Service("ratings", ports=(9080,))], insts)])
    mesh.refresh()
    policy = PolicyModel()
    text = "\n---\n".join((DATA / "bookinfo" / f).read_text() for f in files) + extra
    policy.sync(_docs(text))
    assert not policy.rejections(), policy.rejections()
    return mesh, AppliedPolicy(policy), policy


def _routes(mesh: MeshModel, applied: AppliedPolicy, node: NodeInfo = NODE) -> dict[str, Any]:
    gen = OutboundRouteGenerator()
    gen.use_policy(applied)
    [res] = list(gen.generate(mesh, node))
    return {vh["name"]: vh for vh in json_format.MessageToDict(res.message)["virtualHosts"]}


def test_reviews_80_20_becomes_weighted_subset_clusters_on_every_host_form() -> None:
    mesh, applied, _ = _bookinfo("destination-rule-all.yaml", "virtual-service-reviews-80-20.yaml")
    vh = _routes(mesh, applied)["reviews"]
    assert {"reviews", "reviews.default", "reviews.default.svc.cluster.local", "reviews:*"} <= set(vh["domains"])
    [route] = vh["routes"]
    assert route["route"]["weightedClusters"]["clusters"] == [
        {"name": "outbound|9080|v1|reviews", "weight": 80}, {"name": "outbound|9080|v2|reviews", "weight": 20}]
    clusters = ClusterGenerator()
    clusters.use_policy(applied)
    names = {r.name for r in clusters.generate(mesh, NODE)}
    assert {"outbound|9080|reviews", "outbound|9080|v1|reviews", "outbound|9080|v3|reviews",
            "outbound|9080|v2-mysql|ratings"} <= names
    eds = EndpointGenerator()
    eds.use_policy(applied)
    by_name = {r.name: r.message for r in eds.generate(mesh, NODE)}
    ports = [e.endpoint.address.socket_address.port_value
             for loc in by_name["outbound|9080|v2|reviews"].endpoints for e in loc.lb_endpoints]
    assert ports == [9002]
    assert not by_name["outbound|9080|v2-mysql|ratings"].endpoints


def test_jason_header_match_and_ratings_abort_are_ordered_routes() -> None:
    mesh, applied, _ = _bookinfo("destination-rule-all.yaml", "virtual-service-reviews-jason-v2-v3.yaml",
                                 "virtual-service-ratings-test-abort.yaml")
    vhs = _routes(mesh, applied)
    jason, rest = vhs["reviews"]["routes"]
    assert jason["match"]["headers"] == [{"name": "end-user", "stringMatch": {"exact": "jason"}}]
    assert jason["route"]["cluster"] == "outbound|9080|v2|reviews"
    assert rest["match"] == {"prefix": "/"} and rest["route"]["cluster"] == "outbound|9080|v3|reviews"
    abort, _plain = vhs["ratings"]["routes"]
    fault = fault_pb2.HTTPFault()
    json_format.ParseDict(abort["typedPerFilterConfig"]["envoy.filters.http.fault"], fault_any := any_pb2.Any())
    fault_any.Unpack(fault)
    assert fault.abort.http_status == 500 and fault.abort.percentage.numerator == 1_000_000


def test_every_http_field_is_written_as_envoy_names_it() -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
      method: {exact: POST}
      queryParams: {q: {exact: "1"}}
      withoutHeaders: {x-skip: {}}
      sourceLabels: {app: web}
    rewrite: {uri: /v2, authority: reviews.internal}
    headers: {request: {set: {x-a: "1"}, remove: [x-b]}, response: {add: {x-c: "2"}}}
    mirror: {host: reviews, subset: v3}
    mirrorPercentage: {value: 25.5}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,503"}
    timeout: 5s
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {regex: "/teapot.*"}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - route: [{destination: {host: nowhere}}]
"""
    mesh, applied, _ = _bookinfo("destination-rule-all.yaml", extra="\n---\n" + vs)
    web = NodeInfo("w", metadata={"LABELS": {"app": "web"}})
    first, redirect, direct, unknown = _routes(mesh, applied, web)["reviews"]["routes"]
    assert first["match"]["prefix"] == "/api"
    assert {h["name"] for h in first["match"]["headers"]} == {":method", "x-skip"}
    assert first["match"]["queryParameters"] == [{"name": "q", "stringMatch": {"exact": "1"}}]
    ra = first["route"]
    assert ra["prefixRewrite"] == "/v2" and ra["hostRewriteLiteral"] == "reviews.internal"
    assert ra["timeout"] == "5s" and ra["retryPolicy"]["numRetries"] == 3
    assert ra["retryPolicy"]["retryOn"] == "5xx,retriable-status-codes" and ra["retryPolicy"]["retriableStatusCodes"] == [503]
    assert ra["requestMirrorPolicies"] == [{"cluster": "outbound|9080|v3|reviews", "runtimeFraction": {
        "defaultValue": {"numerator": 255000, "denominator": "MILLION"}}}]
    assert first["requestHeadersToRemove"] == ["x-b"]
    assert redirect["redirect"] == {"pathRedirect": "/new", "responseCode": "FOUND"}
    assert direct["directResponse"] == {"status": 418, "body": {"inlineString": "short and stout"}}
    assert unknown["directResponse"] == {"status": 503}
    # a node without the source labels does not get the first route
    assert len(_routes(mesh, applied)["reviews"]["routes"]) == 3


def test_destination_rule_traffic_policy_merges_port_level_and_subset_settings() -> None:
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {tcp: {maxConnections: 10, connectTimeout: 250ms}, http: {http1MaxPendingRequests: 5, maxRetries: 2}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
"""
    mesh, applied, _ = _bookinfo(extra=dr)
    gen = ClusterGenerator()
    gen.use_policy(applied)
    by_name = {r.name: json_format.MessageToDict(r.message) for r in gen.generate(mesh, NODE)}
    base = by_name["outbound|9080|reviews"]
    assert base["lbPolicy"] == "RANDOM" and base["connectTimeout"] == "0.250s"
    assert base["circuitBreakers"]["thresholds"] == [{"maxConnections": 10, "maxPendingRequests": 5, "maxRetries": 2}]
    assert base["outlierDetection"]["consecutive5xx"] == 3 and base["outlierDetection"]["maxEjectionPercent"] == 50
    assert by_name["outbound|9080|v1|reviews"]["lbPolicy"] == "RING_HASH"


MR_WORKLOADS = """
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: p1, namespace: meta-dubbo}
spec: {address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo: 20001}, labels: {app: dubbo-sample-provider, version: v1}}
---
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: p2, namespace: meta-dubbo}
spec: {address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo: 20002}, labels: {app: dubbo-sample-provider, version: v2}}
"""


def _aeraki_dubbo(meta_router: str) -> tuple[PolicyModel, MeshModel, dict[str, Any], list[str]]:
    """Aeraki's Dubbo serviceentry + destinationrule, two workloads and ``meta_router`` as policy; the
    Dubbo generators using it; the two sample documents (to sync again with another MetaRouter)."""
    from sofamesh.pilot.policy.entries import PolicyInstances

    policy = PolicyModel()
    source = PolicyInstances(policy)
    mesh = MeshModel([source])
    policy.add_listener(lambda keys: mesh.refresh(source.rebuild()))
    base = [(DATA / "aeraki-dubbo" / f).read_text() for f in ("serviceentry.yaml", "destinationrule.yaml")]
    policy.sync(_docs("\n---\n".join([*base, MR_WORKLOADS, meta_router])))
    assert not policy.rejections(), policy.rejections()
    gens = rpc_generators("dubbo", 20880, always_listen=True)
    applied = AppliedPolicy(policy)
    for g in gens.values():
        g.use_policy(applied)
    return policy, mesh, gens, base


def test_aeraki_traffic_split_and_mirror_become_dubbo_listener_routes() -> None:
    aeraki = DATA / "aeraki-dubbo"
    policy, mesh, gens, base = _aeraki_dubbo((aeraki / "traffic-split.yaml").read_text())
    [listener] = gens["lds.dubbo"].generate(mesh, NODE)
    value = json_format.MessageToDict(listener.message)["filterChains"][0]["filters"][0]["typedConfig"]["value"]
    [route] = value["routes"]
    svc = "org.apache.dubbo.samples.basic.api.DemoService"
    assert route["match"] == {"service": {"exact": svc}, "method": {"exact": "sayHello"},
                              "headers": {"foo": {"exact": "bar"}}}
    assert route["weighted_clusters"] == [{"name": f"outbound|20880|v1|{svc}", "weight": 20},
                                          {"name": f"outbound|20880|v2|{svc}", "weight": 80}]
    names = {r.name for r in gens["cds.dubbo"].generate(mesh, NODE)}
    assert {f"outbound|20880|{svc}", f"outbound|20880|v1|{svc}", f"outbound|20880|v2|{svc}"} <= names
    policy.sync(_docs("\n---\n".join([*base, MR_WORKLOADS, (aeraki / "traffic-mirroring.yaml").read_text()])))
    [listener] = gens["lds.dubbo"].generate(mesh, NODE)
    value = json_format.MessageToDict(listener.message)["filterChains"][0]["filters"][0]["typedConfig"]["value"]
    [route] = value["routes"]
    assert route["cluster"] == f"outbound|20880|v1|{svc}"
    assert route["mirror"] == [{"cluster": f"outbound|20880|v2|{svc}", "percentage": 100.0}]


RETRIES = """
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: retried, namespace: meta-dubbo}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  routes:
  - name: idempotent
    match: {attributes: {method: {exact: sayHello}}}
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}}]
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "connect-failure,reset", backoff: 100ms}
  - name: safe-only
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}}]
    retries: {attempts: 1}
  - name: none
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}}]
"""


def test_meta_router_retries_become_the_retry_policy_of_rpc_routes_that_the_sidecar_loads() -> None:
    from sofamesh.core.config.model import RetryPolicyConfig

    _policy, mesh, gens, _base = _aeraki_dubbo(RETRIES)
    [listener] = gens["lds.dubbo"].generate(mesh, NODE)
    value = json_format.MessageToDict(listener.message)["filterChains"][0]["filters"][0]["typedConfig"]["value"]
    routes = {r["name"]: r.get("retry_policy") for r in value["routes"]}
    idempotent = RetryPolicyConfig.model_validate(routes["idempotent"])  # as the sidecar reads it
    safe = RetryPolicyConfig.model_validate(routes["safe-only"])
    assert (idempotent.retry_on, idempotent.num_retries, idempotent.per_try_timeout_ms) == (
        ["connect-failure", "reset"], 3, 500)
    # backoff as a VirtualService's: the base interval, the maximum 10 times it (Envoy's default)
    assert (idempotent.retry_back_off.base_interval_ms, idempotent.retry_back_off.max_interval_ms) == (100, None)
    assert (safe.retry_on, safe.num_retries) == (["connect-failure", "retriable"], 1)  # no reset unless asked
    assert safe.retry_back_off.base_interval_ms == 25  # Envoy's default base interval
    assert routes["none"] is None


RATE_LIMIT = """
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: limited, namespace: meta-dubbo}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  routes:
  - route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}}]
  localRateLimit:
    tokenBucket: {maxTokens: 5, tokensPerFill: 2, fillInterval: 60s}
    conditions:
    - match: {attributes: {method: {exact: ping}, tier: {prefix: gold}}}
      tokenBucket: {maxTokens: 100, fillInterval: 1s}
"""


def test_local_rate_limit_becomes_quota_overrides_of_the_dubbo_listener_that_the_sidecar_loads() -> None:
    from sofamesh.core.config.loader import from_mapping
    from sofamesh.core.xds.translate import Translated, assemble, translate_listener
    from sofamesh.plugins.filters.quota.local import LocalQuotaFilterFactory

    aeraki = DATA / "aeraki-dubbo"
    policy, mesh, gens, base = _aeraki_dubbo(RATE_LIMIT)
    [listener] = gens["lds.dubbo"].generate(mesh, NODE)
    svc = "org.apache.dubbo.samples.basic.api.DemoService"
    t = translate_listener(listener.message)
    assert t is not None
    [quota] = t.config["filters"]
    assert quota == {"type": "quota.local", "config": {"overrides": [
        {"match": {"service": {"exact": svc}, "method": {"exact": "ping"}, "tier": {"prefix": "gold"}},
         "limit": {"rate": 1, "burst": 100}},  # tokensPerFill defaults to 1
        {"match": {"service": {"exact": svc}}, "limit": {"rate": 2 / 60, "burst": 5}}]}}
    LocalQuotaFilterFactory().create(quota["config"], "filters[0].config")
    state = Translated()
    state.listeners[listener.name] = t
    config = assemble(from_mapping({}), state, False)
    assert [f.type for f in config.listeners[0].filters] == ["quota.local"]
    # without localRateLimit the listener carries no filter
    policy.sync(_docs("\n---\n".join([*base, MR_WORKLOADS, (aeraki / "traffic-mirroring.yaml").read_text()])))
    [listener] = gens["lds.dubbo"].generate(mesh, NODE)
    assert "filters" not in json_format.MessageToDict(listener.message)["filterChains"][0]["filters"][0][
        "typedConfig"]["value"]


def test_consistent_hash_on_an_rpc_host_hashes_the_named_attribute_on_its_routes() -> None:
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sticky, namespace: meta-dubbo}
spec:
  host: org.apache.dubbo.samples.basic.api.demoservice
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: user}}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 0s}}}}
"""
    mr = """apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: m, namespace: meta-dubbo}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  routes:
  - name: by-ip
    match: {attributes: {method: {exact: a}}}
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}}]
  - name: cookie-means-nothing
    match: {attributes: {method: {exact: b}}}
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}}]
  - name: by-user
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice}}]
"""
    policy, mesh, gens, base = _aeraki_dubbo(dr.replace("sticky", "other"))  # a DestinationRule, no MetaRouter
    policy.sync(_docs("\n---\n".join([base[0], dr, MR_WORKLOADS])))

    def routes() -> dict[str, Any]:
        [listener] = gens["lds.dubbo"].generate(mesh, NODE)
        value = json_format.MessageToDict(listener.message)["filterChains"][0]["filters"][0]["typedConfig"]["value"]
        return {r["name"]: r.get("hash_policy") for r in value["routes"]}

    svc = "org.apache.dubbo.samples.basic.api.DemoService"
    default = routes()  # the service's own routes: the top-level consistentHash
    assert default[svc] == [{"header": {"header_name": "user"}}], default
    policy.sync(_docs("\n---\n".join([base[0], dr, MR_WORKLOADS, mr])))
    assert routes() == {"by-ip": [{"connection_properties": {"source_ip": True}}], "cookie-means-nothing": None,
                        "by-user": [{"header": {"header_name": "user"}}]}
    lb = {r.name: r.message.lb_policy for r in gens["cds.dubbo"].generate(mesh, NODE)}
    assert lb[f"outbound|20880|{svc}"] == lb[f"outbound|20880|v1|{svc}"] == 2  # RING_HASH
