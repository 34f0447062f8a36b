"""Envoy v3 resources -> the kernel's config: what is translated, and NACK texts naming the field."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from sofamesh.core.config.loader import from_mapping
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.xds.translate import (
    Translated,
    assemble,
    translate_cluster,
    translate_listener,
    translate_load_assignment,
    translate_route_configuration,
)
from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.xds.generator import NodeInfo
from sofamesh.pilot.xds.rpc import RpcListenerGenerator
from tests.integration.xds.tiny_ads import http_listener, route_config, static_cluster
from tests.unit.pilot.test_model import FakeRegistry


def _route(prefix: str, **action: object) -> route_components_pb2.Route:
    return route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=prefix),
                                      route=route_components_pb2.RouteAction(**action))  # type: ignore[arg-type]


def test_virtual_hosts_become_host_matches_with_exact_domains_before_wildcards() -> None:
    rc = route_pb2.RouteConfiguration(name="r", virtual_hosts=[
        route_components_pb2.VirtualHost(name="any", domains=["*"], routes=[_route("/", cluster="fallback")]),
        route_components_pb2.VirtualHost(name="web", domains=["web", "web:*"], routes=[_route("/", cluster="web")]),
    ])
    routes = translate_route_configuration(rc)
    assert [(r["name"], r["match"].get("host"), r["cluster"]) for r in routes] == [
        ("web/0", {"exact": "web"}, "web"), ("web/0", {"prefix": "web:"}, "web"), ("any/0", None, "fallback")]


def test_weighted_clusters_timeouts_and_header_matches_are_translated() -> None:
    r = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(path="/api", headers=[route_components_pb2.HeaderMatcher(
            name="X-Tenant", string_match=string_pb2.StringMatcher(prefix="a"), invert_match=True)]),
        route=route_components_pb2.RouteAction(
            weighted_clusters=route_components_pb2.WeightedCluster(clusters=[
                route_components_pb2.WeightedCluster.ClusterWeight(name="v1", weight=wrappers_pb2.UInt32Value(value=90)),
                route_components_pb2.WeightedCluster.ClusterWeight(name="v2", weight=wrappers_pb2.UInt32Value(value=10)),
            ]), timeout=duration_pb2.Duration(seconds=2, nanos=500_000_000),
            retry_policy=route_components_pb2.RetryPolicy(retry_on="connect-failure")))
    rc = route_pb2.RouteConfiguration(name="r", virtual_hosts=[
        route_components_pb2.VirtualHost(name="vh", domains=["*"], routes=[r])])
    (out,) = translate_route_configuration(rc)
    assert out == {"name": "vh/0", "match": {"path": {"exact": "/api"},
                                             "headers": {"x-tenant": {"prefix": "a", "invert": True}}},
                   "weighted_clusters": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
                   "timeout_ms": 2500,
                   "retry_policy": {"retry_on": ["connect-failure"], "num_retries": 1, "previous_hosts": False,
                                    "include_attempt_count": False}}
    # and the kernel accepts it
    from_mapping({"listeners": [{"address": "127.0.0.1:1", "routes": [out]}],
                  "clusters": [{"name": "v1"}, {"name": "v2"}]})


def test_a_hash_policy_the_kernel_cannot_compute_is_refused_naming_the_route() -> None:
    rc = route_pb2.RouteConfiguration(name="r", virtual_hosts=[route_components_pb2.VirtualHost(
        name="vh", domains=["*"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster="c", hash_policy=[
                route_components_pb2.RouteAction.HashPolicy(
                    filter_state=route_components_pb2.RouteAction.HashPolicy.FilterState(key="x"))]))])])
    with pytest.raises(ConfigError) as exc:
        translate_route_configuration(rc)
    assert str(exc.value) == ("RouteConfiguration 'r': virtual_hosts[0].routes[0].route.hash_policy[0].filter_state: "
                              "hash policy 'filter_state' is not supported "
                              "(header, cookie, connection_properties, query_parameter)")


def test_an_http_listener_with_rds_waits_for_its_route_config() -> None:
    t = translate_listener(http_listener("in", "127.0.0.1:8080", rds="r1"))
    assert t is not None and t.rds == "r1"
    assert t.config == {"name": "in", "address": "127.0.0.1:8080", "protocols": ["http1"], "routes": []}
    state = Translated(listeners={"in": t})
    assert assemble(from_mapping({}), state, False).listeners == []  # warming: not bound yet
    state.routes["r1"] = translate_route_configuration(route_config("r1", [("/", "web")]))
    state.clusters["web"] = translate_cluster(static_cluster("web", ["127.0.0.1:9000"]))
    config = assemble(from_mapping({}), state, True)
    assert [lc.address for lc in config.listeners] == ["127.0.0.1:8080"]
    assert [e.address for e in config.clusters[0].endpoints] == ["127.0.0.1:9000"]


def test_a_route_to_an_unknown_cluster_is_an_error_on_new_routes_and_an_empty_cluster_otherwise() -> None:
    t = translate_listener(http_listener("in", "127.0.0.1:8080", routes=route_config("inline", [("/", "gone")])))
    assert t is not None
    state = Translated(listeners={"in": t})
    with pytest.raises(ConfigErrors) as exc:
        assemble(from_mapping({}), state, True)
    assert str(exc.value) == "Listener 'in': route 'all/0': unknown cluster 'gone'"
    config = assemble(from_mapping({}), state, False)  # CDS removed it: only its requests fail
    assert [(c.name, c.endpoints) for c in config.clusters] == [("gone", [])]


def test_clusters_translate_lb_policy_and_eds_names_and_refuse_the_rest() -> None:
    c = static_cluster("web", ["127.0.0.1:9000"])
    c.lb_policy = cluster_pb2.Cluster.RANDOM
    c.connect_timeout.FromMilliseconds(250)
    assert translate_cluster(c).config == {"name": "web", "lb": "random", "connect_timeout_ms": 250,
                                           "http_protocol": "http1", "endpoints": [{"address": "127.0.0.1:9000"}]}
    eds = cluster_pb2.Cluster(name="outbound|80|x", type=cluster_pb2.Cluster.EDS)
    assert translate_cluster(eds).eds == "outbound|80|x"
    eds.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    with pytest.raises(ConfigError, match=r"^Cluster 'outbound\|80\|x': lb_policy: CLUSTER_PROVIDED is not supported"):
        translate_cluster(eds)


def test_unhealthy_and_draining_endpoints_are_kept_flagged_and_weights_kept() -> None:
    cla = static_cluster("web", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]).load_assignment
    lbs = cla.endpoints[0].lb_endpoints
    lbs[0].health_status = health_check_pb2.UNHEALTHY
    lbs[1].health_status = health_check_pb2.DRAINING
    lbs[2].load_balancing_weight.value = 7
    cla.endpoints[0].locality.zone = "z1"
    assert translate_load_assignment(cla) == [
        {"address": "127.0.0.1:1", "labels": {"zone": "z1"}, "health_status": "unhealthy"},
        {"address": "127.0.0.1:2", "labels": {"zone": "z1"}, "health_status": "draining"},
        {"address": "127.0.0.1:3", "weight": 7, "labels": {"zone": "z1"}}]
    lbs.append(endpoint_components_pb2.LbEndpoint(endpoint_name="named"))
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.lb_endpoints\[3\]\.endpoint_name"):
        translate_load_assignment(cla)


def _bolt_mesh() -> MeshModel:
    reg = FakeRegistry("r")
    svc = Service("com.example.Echo:1.0", "bolt", metadata={"timeout_ms": "2500"})
    reg.svcs[svc.name] = svc
    reg.insts[svc.name] = [ServiceInstance(service=svc.name, id="a", address="127.0.0.1", port=12200)]
    model = MeshModel([reg])
    model.refresh()
    return model


def test_pilots_bolt_listener_round_trips_through_the_sidecars_translator() -> None:
    gen = RpcListenerGenerator("bolt", 12220)
    mesh = _bolt_mesh()
    (res,) = gen.generate(mesh, NodeInfo("n", user_agent="sofamesh/0.1.0", metadata={"sofamesh.bolt_port": 15555}))
    t = translate_listener(res.message)
    assert t is not None
    assert t.config == {"name": "outbound|bolt|15555", "address": "127.0.0.1:15555", "protocols": ["bolt"],
                        "routes": [{"name": "com.example.Echo:1.0", "match": {"service": {"exact": "com.example.Echo:1.0"}},
                                    "cluster": "outbound|12200|com.example.Echo:1.0", "timeout_ms": 2500}],
                        "__path__": "Listener 'outbound|bolt|15555': filter_chains[0].filters[0].typed_config.value"}
    assert list(gen.generate(mesh, NodeInfo("envoy", user_agent="envoy/1.40.0"))) == []  # Envoy would NACK it


def _rpc_listener(value: dict[str, object]) -> object:
    from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
    from google.protobuf import any_pb2, struct_pb2
    from xds.type.v3 import typed_struct_pb2

    from tests.integration.xds.tiny_ads import socket_address

    struct = struct_pb2.Struct()
    struct.update(value)
    config = any_pb2.Any()
    config.Pack(typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/sofamesh.config.rpc.v1.RpcProxy",
                                             value=struct))
    return listener_pb2.Listener(name="rpc", address=socket_address("127.0.0.1:20880"), filter_chains=[
        listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="sofamesh.filters.network.rpc_proxy", typed_config=config)])])


def test_rpc_proxy_routes_match_service_method_version_and_group() -> None:
    route = {"name": "v2-g1", "match": {"service": {"prefix": "com.acme."}, "method": "echo", "version": "2.0.0",
                                        "group": "g1", "headers": {"tenant": "a"}},
             "weighted_clusters": [{"name": "v2", "weight": 3}, {"name": "v2-canary", "weight": 1}],
             "timeout_ms": 1500}
    t = translate_listener(_rpc_listener({"protocol": "dubbo", "routes": [route]}))
    assert t is not None and t.config["protocols"] == ["dubbo"]
    state = Translated(listeners={"rpc": t}, clusters={
        n: translate_cluster(static_cluster(n, ["127.0.0.1:1"])) for n in ("v2", "v2-canary")})
    (r,) = assemble(from_mapping({}), state, True).listeners[0].routes
    assert (r.match.service.prefix, r.match.method.exact, r.match.version.exact, r.match.group.exact) == (
        "com.acme.", "echo", "2.0.0", "g1")
    assert r.match.headers["tenant"].exact == "a"
    assert [(w.name, w.weight) for w in r.weighted_clusters] == [("v2", 3), ("v2-canary", 1)]
    assert r.timeout_ms == 1500


def test_a_bad_rpc_proxy_key_is_refused_with_its_path() -> None:
    with pytest.raises(ConfigError) as exc:
        translate_listener(_rpc_listener({"protocol": "bolt", "routez": []}))
    assert str(exc.value) == ("Listener 'rpc': filter_chains[0].filters[0].typed_config.value.routez: unknown key")
    t = translate_listener(_rpc_listener({"protocol": "bolt", "routes": [{"match": {"service": {"exact": "x"}},
                                                                          "cluster": "c", "timeout_ms": -1}]}))
    state = Translated(listeners={"rpc": t} if t else {}, clusters={"c": translate_cluster(static_cluster("c", []))})
    with pytest.raises(ConfigErrors) as errs:
        assemble(from_mapping({}), state, True)
    assert str(errs.value).startswith(
        "Listener 'rpc': filter_chains[0].filters[0].typed_config.value: listeners[0].routes[0].timeout_ms:")


def test_rpc_proxy_routes_that_are_not_objects_are_refused_with_their_path() -> None:
    """Found by fuzzing (fuzz/crashes/xds_translation): a list where a route belongs, or a list as a
    cluster name, raised AttributeError / TypeError while assembling, which ends the xDS stream."""
    for routes in ([[None, None]], [{"cluster": ["c"]}], [{"weighted_clusters": [7, {"name": ["x"]}]}]):
        t = translate_listener(_rpc_listener({"protocol": "bolt", "routes": routes}))
        with pytest.raises(ConfigErrors) as errs:
            assemble(from_mapping({}), Translated(listeners={"rpc": t} if t else {}), True)
        assert "typed_config.value: listeners[0].routes[0]" in str(errs.value)


def test_an_rpc_proxy_struct_holding_nan_is_refused_with_its_path() -> None:
    """Found by fuzzing: protobuf refuses to turn a NaN Struct number into JSON with a ValueError."""
    with pytest.raises(ConfigError) as exc:
        translate_listener(_rpc_listener({"protocol": "bolt", "routes": [{"timeout_ms": float("nan")}]}))
    assert exc.value.path == "Listener 'rpc': filter_chains[0].filters[0].typed_config.value"
    assert "not a JSON value" in str(exc.value)


def test_a_nested_typed_config_that_does_not_parse_is_refused_naming_the_filter() -> None:
    """Found by fuzzing: protobuf's DecodeError from a nested Any escaped as itself (no NACK)."""
    from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
    from google.protobuf import any_pb2

    from tests.integration.xds.tiny_ads import socket_address

    hcm = any_pb2.Any(type_url="type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                               "HttpConnectionManager", value=b"\x12\x02\xff\xfe")  # stat_prefix: bad UTF-8
    listener = listener_pb2.Listener(name="web", address=socket_address("127.0.0.1:8080"), filter_chains=[
        listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=hcm)])])
    with pytest.raises(ConfigError) as exc:
        translate_listener(listener)
    assert exc.value.path == "Listener 'web': filter_chains[0].filters[0].typed_config"
    assert "cannot decode envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" in str(
        exc.value)


def test_dubbo_instances_of_two_versions_get_a_subset_cluster_and_route_each() -> None:
    from sofamesh.pilot.xds.rpc import rpc_generators

    reg = FakeRegistry("r")
    svc = Service("com.example.Echo", "dubbo")
    reg.svcs[svc.name] = svc
    reg.insts[svc.name] = [ServiceInstance(service=svc.name, id=i, address="127.0.0.1", port=20000 + n, version=v)
                           for n, (i, v) in enumerate((("a", "1.0.0"), ("b", "2.0.0"), ("c", "2.0.0")))]
    mesh = MeshModel([reg])
    mesh.refresh()
    gens = rpc_generators("dubbo", 20880)
    node = NodeInfo("n", user_agent="sofamesh/0.1.0")
    state = Translated()
    for res in gens["cds.dubbo"].generate(mesh, node):
        state.clusters[res.name] = translate_cluster(res.message)
    for res in gens["eds.dubbo"].generate(mesh, node):
        state.endpoints[res.name] = translate_load_assignment(res.message)
    (lst,) = gens["lds.dubbo"].generate(mesh, node)
    t = translate_listener(lst.message)
    assert t is not None
    state.listeners[lst.name] = t
    config = assemble(from_mapping({}), state, True)
    base = "outbound|20880|com.example.Echo"
    eps = {c.name: sorted(e.address for e in c.endpoints) for c in config.clusters}
    assert eps == {base: ["127.0.0.1:20000", "127.0.0.1:20001", "127.0.0.1:20002"],
                   f"{base}|1.0.0|": ["127.0.0.1:20000"], f"{base}|2.0.0|": ["127.0.0.1:20001", "127.0.0.1:20002"]}
    routes = [(r.match.version.exact if r.match.version else None, r.cluster) for r in config.listeners[0].routes]
    assert routes == [("1.0.0", f"{base}|1.0.0|"), ("2.0.0", f"{base}|2.0.0|"), (None, base)]


def test_a_route_filter_config_that_does_not_parse_or_holds_nan_is_refused_with_its_path() -> None:
    """The failures fuzzing found in listener filters, for a route's own filters (typed_per_filter_config)."""
    from google.protobuf import any_pb2, struct_pb2
    from xds.type.v3 import typed_struct_pb2

    from sofamesh.core.xds.route_filters import FILTER_CONFIG_TYPE, FILTER_TYPE_URL, route_filter

    with pytest.raises(ConfigError) as exc:
        route_filter(any_pb2.Any(type_url=FILTER_CONFIG_TYPE, value=b"\x0a\x02\xff\xfe"), "r.typed_per_filter_config[x]")
    assert exc.value.path == "r.typed_per_filter_config[x]" and "cannot decode" in str(exc.value)
    value = struct_pb2.Struct()
    value.update({"type": "authz.rbac", "config": {"n": float("nan")}})
    packed = any_pb2.Any()
    packed.Pack(typed_struct_pb2.TypedStruct(type_url=FILTER_TYPE_URL, value=value))
    with pytest.raises(ConfigError) as exc:
        route_filter(packed, "r.typed_per_filter_config[x]")
    assert exc.value.path == "r.typed_per_filter_config[x].value" and "not a JSON value" in str(exc.value)
