"""exportTo and the choice among several VirtualServices / DestinationRules, as a proxy's namespace sees them."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.applied import AppliedPolicy, choose, visible
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import Resource
from sofamesh.pilot.xds.cache import SnapshotCache
from sofamesh.pilot.xds.generator import CLUSTER, ROUTE, NodeInfo
from sofamesh.pilot.xds.generators import ClusterGenerator, OutboundRouteGenerator
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed
from tests.unit.pilot.xds.test_policy_generation import _docs


def _node(name: str, namespace: str | None = None) -> NodeInfo:
    return NodeInfo(name, user_agent="sofamesh", metadata={"NAMESPACE": namespace} if namespace else {})


def _vs(name: str, ns: str, subset: str, export: list[str] | None = None) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  {"exportTo: " + str(export) if export else ""}
  http:
  - route:
    - destination: {{host: reviews.default.svc.cluster.local, subset: {subset}}}
"""


def _dr(name: str, ns: str, subset: str, export: list[str] | None = None) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: reviews.default.svc.cluster.local
  {"exportTo: " + str(export) if export else ""}
  subsets:
  - name: {subset}
    labels: {{version: {subset}}}
"""


def _setup(*docs: str) -> tuple[MeshModel, AppliedPolicy]:
    insts = [ServiceInstance("reviews", f"r{v}", "127.0.0.1", 9000 + v, labels={"version": f"v{v}"}) for v in (1, 2)]
    mesh = MeshModel([Fixed([Service("reviews", ports=(9080,))], insts)])
    mesh.refresh()
    policy = PolicyModel()
    policy.sync(_docs("\n---\n".join(docs)))
    assert not policy.rejections(), [v.to_dict() for v in policy.rejections()]
    return mesh, AppliedPolicy(policy)


def _r(ns: str, name: str = "x", export: list[str] | None = None) -> Resource:
    spec: dict[str, Any] = {"exportTo": export} if export else {}
    return Resource("networking.istio.io/v1", "DestinationRule", ns, name, spec)


def test_export_to_visibility() -> None:
    assert visible(_r("a"), "b")  # default: every namespace
    assert visible(_r("a", export=["*"]), "b")
    assert visible(_r("a", export=["."]), "a")
    assert not visible(_r("a", export=["."]), "b")
    assert visible(_r("a", export=["b", "c"]), "c")
    assert not visible(_r("a", export=["b", "c"]), "a")
    assert visible(_r("a", export=[".", "b"]), "a")
    assert not visible(_r("a", export=["~"]), "a")


def test_destination_rule_choice_order_proxy_then_service_then_root_namespace() -> None:
    proxy, svc, root, other = _r("p", "1", ["."]), _r("default", "2"), _r("istio-system", "3"), _r("zz", "4")
    every = [svc, root, proxy, other]
    assert choose("DestinationRule", every, "p", "default") is proxy  # own namespace, even if private
    assert choose("DestinationRule", every, "q", "default") is svc
    assert choose("DestinationRule", [root, other], "q", "default") is root
    assert choose("DestinationRule", [other], "q", "default") is None  # elsewhere: not for this proxy
    assert choose("DestinationRule", [other], "zz", "default") is other
    private_svc = _r("default", "2", ["."])
    assert choose("DestinationRule", [private_svc, root], "q", "default") is root  # not exported to q
    assert choose("DestinationRule", [private_svc, root], "default", "default") is private_svc
    assert choose("DestinationRule", [_r("default", "2", ["q"]), root], "q", "default").name == "2"
    assert choose("DestinationRule", every, None, "default") is svc  # no view: first by namespace/name


def test_virtual_service_visibility_and_own_namespace_wins() -> None:
    mesh, applied = _setup(_vs("pub", "default", "v1"), _vs("mine", "team", "v2", ["."]))
    snap = applied.snapshot(mesh)
    assert snap.view("team").for_service("reviews").virtual_service.name == "mine"  # type: ignore[union-attr]
    assert snap.view("default").for_service("reviews").virtual_service.name == "pub"  # type: ignore[union-attr]
    assert snap.view("other").for_service("reviews").virtual_service.name == "pub"  # type: ignore[union-attr]
    mesh, applied = _setup(_vs("only", "team", "v2", ["team", "ops"]))
    snap = applied.snapshot(mesh)
    assert snap.view("ops").for_service("reviews").virtual_service is not None
    assert snap.view("default").for_service("reviews").virtual_service is None


def _route_clusters(gen: OutboundRouteGenerator, mesh: MeshModel, node: NodeInfo) -> list[str]:
    [res] = list(gen.generate(mesh, node))
    vhs = {vh["name"]: vh for vh in json_format.MessageToDict(res.message)["virtualHosts"]}
    return [r["route"].get("cluster", "") for r in vhs["reviews"]["routes"]]


def test_a_virtual_service_exported_to_one_namespace_routes_only_its_proxies() -> None:
    mesh, applied = _setup(_dr("reviews", "default", "v2"), _vs("canary", "default", "v2", ["team"]))
    gen = OutboundRouteGenerator()
    gen.use_policy(applied)
    assert _route_clusters(gen, mesh, _node("a", "team")) == ["outbound|9080|v2|reviews"]
    assert _route_clusters(gen, mesh, _node("b", "default")) == ["outbound|9080|reviews"]
    assert _route_clusters(gen, mesh, _node("c")) == ["outbound|9080|reviews"]  # no NAMESPACE: default


def test_snapshots_are_shared_only_by_nodes_of_one_namespace() -> None:
    mesh, applied = _setup(_dr("reviews", "team", "v2", ["."]), _vs("canary", "default", "v2", ["team"]))
    gens = []
    for gen in (ClusterGenerator(), OutboundRouteGenerator()):
        gen.use_policy(applied)
        gens.append(("g", gen))
    cache = SnapshotCache(mesh, gens)
    team1, team2, dflt = _node("t1", "team"), _node("t2", "team"), _node("d1", "default")
    assert cache.get(ROUTE, team1) is cache.get(ROUTE, team2)
    assert cache.get(ROUTE, team1).version != cache.get(ROUTE, dflt).version
    # the DestinationRule private to team: its subset cluster only for team's proxies
    assert "outbound|9080|v2|reviews" in cache.get(CLUSTER, team1).entries
    assert "outbound|9080|v2|reviews" not in cache.get(CLUSTER, dflt).entries
    assert cache.get(CLUSTER, team1) is cache.get(CLUSTER, team2)
    route = gens[1][1]
    assert isinstance(route, OutboundRouteGenerator)
    assert _route_clusters(route, mesh, team1) == ["outbound|9080|v2|reviews"]
    assert _route_clusters(route, mesh, dflt) == ["outbound|9080|reviews"]  # the VirtualService is not exported


def test_without_virtual_services_or_destination_rules_every_node_shares_one_snapshot() -> None:
    mesh, applied = _setup()
    gen = OutboundRouteGenerator()
    gen.use_policy(applied)
    cache = SnapshotCache(mesh, [("g", gen)])
    assert cache.get(ROUTE, _node("a", "team")) is cache.get(ROUTE, _node("b", "default"))


SERVICE_ENTRY = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: team}
spec:
  hosts: [api.example.com]
  exportTo: [".", ops]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-ext, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route: [{destination: {host: api.example.com}}]
"""


def test_a_service_entry_exists_only_for_the_namespaces_it_is_exported_to() -> None:
    from sofamesh.pilot.policy.entries import PolicyInstances

    policy = PolicyModel()
    source = PolicyInstances(policy)
    insts = [ServiceInstance("reviews", "r1", "127.0.0.1", 9001, labels={"version": "v1"})]
    mesh = MeshModel([Fixed([Service("reviews", ports=(9080,))], insts), source])
    policy.add_listener(lambda keys: mesh.refresh(source.rebuild()))
    policy.sync(_docs(SERVICE_ENTRY))
    mesh.refresh()
    assert not policy.rejections()
    applied = AppliedPolicy(policy)
    clusters, routes = ClusterGenerator(), OutboundRouteGenerator()
    for gen in (clusters, routes):
        gen.use_policy(applied)
    for ns in ("team", "ops"):
        assert "outbound|80|api.example.com" in {r.name for r in clusters.generate(mesh, _node("a", ns))}
        assert _route_clusters(routes, mesh, _node("a", ns)) == ["outbound|80|api.example.com"]
    other = _node("b", "default")
    assert "outbound|80|api.example.com" not in {r.name for r in clusters.generate(mesh, other)}
    [res] = list(routes.generate(mesh, other))
    vhs = json_format.MessageToDict(res.message)["virtualHosts"]
    assert not any("api.example.com" in vh["domains"] for vh in vhs)
    [reviews] = [vh for vh in vhs if vh["name"] == "reviews"]
    assert reviews["routes"][0]["directResponse"]["status"] == 503  # its only destination is not for this proxy


def _meta_router(name: str, ns: str, subset: str, export: list[str]) -> str:
    return f"""apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  exportTo: {export}
  routes:
  - name: {name}
    route: [{{destination: {{host: org.apache.dubbo.samples.basic.api.demoservice, subset: {subset}}}}}]
"""


def _dubbo_routes(gens: dict[str, Any], mesh: MeshModel, ns: str) -> list[str]:
    listeners = list(gens["lds.dubbo"].generate(mesh, _node("n", ns)))
    if not listeners:
        return []
    value = json_format.MessageToDict(listeners[0].message)["filterChains"][0]["filters"][0]["typedConfig"]["value"]
    return [r.get("cluster", "") for r in value["routes"]]


def test_metarouter_export_to_and_own_namespace_decide_each_proxys_rpc_routes() -> None:
    from tests.unit.pilot.xds.test_policy_generation import _aeraki_dubbo

    docs = "\n---\n".join([_meta_router("to-v1", "meta-dubbo", "v1", ["."]),
                           _meta_router("to-v2", "team", "v2", ["team", "ops"])])
    _policy, mesh, gens, _base = _aeraki_dubbo(docs)
    svc = "org.apache.dubbo.samples.basic.api.DemoService"
    assert _dubbo_routes(gens, mesh, "meta-dubbo") == [f"outbound|20880|v1|{svc}"]  # its own namespace's
    assert _dubbo_routes(gens, mesh, "team") == [f"outbound|20880|v2|{svc}"]
    assert _dubbo_routes(gens, mesh, "ops") == [f"outbound|20880|v2|{svc}"]  # exported to it
    # none visible: the service's default routes (a subset route per version, then the service)
    assert _dubbo_routes(gens, mesh, "default")[-1] == f"outbound|20880|{svc}"
    scopes = {gens["lds.dubbo"].scope(_node("n", ns)) for ns in ("meta-dubbo", "team", "ops")}
    assert len(scopes) == 3


def test_an_rpc_service_entry_exists_only_for_the_namespaces_it_is_exported_to() -> None:
    from tests.unit.pilot.xds.test_policy_generation import _aeraki_dubbo

    policy, mesh, gens, base = _aeraki_dubbo("")
    entry = base[0].replace("  resolution: STATIC", "  resolution: STATIC\n  exportTo: [.]")
    from tests.unit.pilot.xds.test_policy_generation import MR_WORKLOADS

    policy.sync(_docs("\n---\n".join([entry, base[1], MR_WORKLOADS])))
    assert not policy.rejections()
    svc = "org.apache.dubbo.samples.basic.api.DemoService"
    assert _dubbo_routes(gens, mesh, "meta-dubbo")[-1] == f"outbound|20880|{svc}"
    assert f"outbound|20880|{svc}" in {r.name for r in gens["cds.dubbo"].generate(mesh, _node("n", "meta-dubbo"))}
    assert _dubbo_routes(gens, mesh, "default") == []  # no listener: the only Dubbo service is not exported here
    assert not [r.name for r in gens["cds.dubbo"].generate(mesh, _node("n", "default"))]


def _merge_dr(name: str, subsets: dict[str, str], created: str | None = None, policy: str = "") -> str:
    meta = f"{{name: {name}, namespace: default" + (f", creationTimestamp: {created}" if created else "") + "}"
    lines = [f"  - {{name: {s}, labels: {{version: {v}}}}}" for s, v in subsets.items()]
    return "\n".join([
        "apiVersion: networking.istio.io/v1", "kind: DestinationRule", f"metadata: {meta}", "spec:",
        "  host: reviews", *([f"  trafficPolicy: {policy}"] if policy else []), "  subsets:", *lines, ""])


def test_destination_rules_of_one_namespace_merge_as_istio_merges_them() -> None:
    from sofamesh.pilot.policy.analyze import analyze
    from sofamesh.pilot.xds.generators import ClusterGenerator

    # creation order first (b is older than a), then names for those without a timestamp (c, d)
    mesh, applied = _setup(
        _merge_dr("a", {"v2": "v2", "v1": "v2"}, "2024-05-02T00:00:00Z", "{loadBalancer: {simple: LEAST_REQUEST}}"),
        _merge_dr("b", {"v1": "v1"}, "2024-05-01T00:00:00Z"),
        _merge_dr("d", {"v4": "v1"}, None, "{loadBalancer: {simple: RANDOM}}"),
        _merge_dr("c", {"v3": "v1", "v2": "v1"}),
    )
    dr = applied.snapshot(mesh).view("default").for_service("reviews").destination_rule
    assert dr is not None and dr.name == "b" and dr.created == "2024-05-01T00:00:00Z"
    assert [(s["name"], s["labels"]["version"]) for s in dr.spec["subsets"]] == [
        ("v1", "v1"), ("v2", "v2"), ("v3", "v1"), ("v4", "v1")]
    # b has no top-level trafficPolicy: the first one found (a's) applies
    assert dr.spec["trafficPolicy"] == {"loadBalancer": {"simple": "LEAST_REQUEST"}}
    clusters = ClusterGenerator()
    clusters.use_policy(applied)
    by_name = {r.name: r.message for r in clusters.generate(mesh, _node("n", "default"))}
    assert {f"outbound|9080|{s}|reviews" for s in ("v1", "v2", "v3", "v4")} <= set(by_name)
    assert by_name["outbound|9080|v4|reviews"].lb_policy == by_name["outbound|9080|reviews"].lb_policy != 0
    findings = [f for f in analyze(applied.policy, mesh) if f.code == "SOFA0003"]
    assert sorted((f.resource, f.message.split("'")[1]) for f in findings) == [
        ("DestinationRule default/a", "v1"), ("DestinationRule default/c", "v2")]
    assert "already defined by DestinationRule default/b for host reviews" in findings[0].message + findings[1].message
