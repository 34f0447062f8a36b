"""DestinationRule localityLbSetting and warmup -> per-proxy EDS priorities / weights and slow start."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.xds.generator import NodeInfo
from sofamesh.pilot.xds.generators import ClusterGenerator, EndpointGenerator
from sofamesh.pilot.xds.locality import locality_matches
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed
from tests.unit.pilot.xds.test_policy_generation import _docs

_INSTANCES = [
    ("a1", {"topology.kubernetes.io/region": "us", "topology.kubernetes.io/zone": "us-a"}),
    ("a2", {"istio-locality": "us.us-a.rack1"}),
    ("b1", {"region": "us", "zone": "us-b"}),
    ("e1", {"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "eu-a", "tier": "gold"}),
    ("ap1", {"topology.kubernetes.io/region": "ap", "topology.kubernetes.io/zone": "ap-a"}),
]


def _mesh(rule: str) -> tuple[MeshModel, AppliedPolicy]:
    insts = [
        ServiceInstance("web", name, "127.0.0.1", 9000 + i, labels=labels)
        for i, (name, labels) in enumerate(_INSTANCES)
    ]
    mesh = MeshModel([Fixed([Service("web", ports=(80,))], insts)])
    mesh.refresh()
    policy = PolicyModel()
    policy.sync(_docs(rule))
    assert not policy.rejections(), policy.rejections()
    return mesh, AppliedPolicy(policy)


def _rule(lb: str, outlier: bool = True) -> str:
    od = "\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s}" if outlier else ""
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {lb}{od}
"""


def _eds(
    mesh: MeshModel, applied: AppliedPolicy, locality: tuple[str, str, str], labels: dict[str, str] | None = None
) -> list[tuple[int, str, int, list[int]]]:
    gen = EndpointGenerator()
    gen.use_policy(applied)
    node = NodeInfo("n", metadata={"LABELS": labels or {}}, locality=locality)
    [cla] = [r.message for r in gen.generate(mesh, node) if r.name == "outbound|80|web"]
    return sorted(
        (
            g.priority,
            "/".join(p for p in (g.locality.region, g.locality.zone, g.locality.sub_zone) if p),
            g.load_balancing_weight.value,
            [e.endpoint.address.socket_address.port_value - 9000 for e in g.lb_endpoints],
        )
        for g in cla.endpoints
    )


def test_instance_locality_comes_from_istio_labels() -> None:
    insts = {name: ServiceInstance("web", name, "127.0.0.1", 1, labels=labels) for name, labels in _INSTANCES}
    assert insts["a1"].locality == ("us", "us-a", "")
    assert insts["a2"].locality == ("us", "us-a", "rack1")
    assert insts["b1"].locality == ("us", "us-b", "")
    assert locality_matches(("us", "us-a", "rack1"), "us/*") and locality_matches(("us", "us-a", ""), "us/us-a")
    assert not locality_matches(("us", "us-b", ""), "us/us-a")


def test_default_failover_orders_priorities_by_the_proxys_locality() -> None:
    mesh, applied = _mesh(_rule("{simple: ROUND_ROBIN}"))
    assert _eds(mesh, applied, ("us", "us-a", "")) == [
        (0, "us/us-a", 1, [0]),
        (1, "us/us-a/rack1", 1, [1]),
        (2, "us/us-b", 1, [2]),
        (3, "ap/ap-a", 1, [4]),
        (3, "eu/eu-a", 1, [3]),
    ]
    # a proxy without a locality, or no outlier detection: the registry's grouping, all at priority 0
    assert {p for p, *_ in _eds(mesh, applied, ("", "", ""))} == {0}
    mesh, applied = _mesh(_rule("{simple: ROUND_ROBIN}", outlier=False))
    assert {p for p, *_ in _eds(mesh, applied, ("us", "us-a", ""))} == {0}


def test_failover_from_region_keeps_its_target_ahead_of_other_regions() -> None:
    mesh, applied = _mesh(_rule("{localityLbSetting: {failover: [{from: us, to: eu}]}}"))
    got = _eds(mesh, applied, ("us", "us-b", ""))
    assert [(p, loc) for p, loc, _w, _e in got] == [
        (0, "us/us-b"),
        (1, "us/us-a"),
        (1, "us/us-a/rack1"),
        (2, "eu/eu-a"),
        (3, "ap/ap-a"),
    ]


def test_failover_priority_ranks_instances_by_matching_labels_in_order() -> None:
    lb = "{localityLbSetting: {failoverPriority: [topology.kubernetes.io/region, tier]}}"
    mesh, applied = _mesh(_rule(lb))
    got = _eds(mesh, applied, ("eu", "eu-b", ""), {"tier": "gold"})
    # region and tier: 0; neither: 2, renumbered 1 (no gaps)
    assert [(p, e) for p, _loc, _w, e in got] == [(0, [3]), (1, [4]), (1, [0]), (1, [1]), (1, [2])]
    got = _eds(mesh, applied, ("us", "us-b", ""), {"tier": "gold"})
    assert [(p, e) for p, _loc, _w, e in got] == [(0, [0]), (0, [1]), (0, [2]), (1, [4]), (1, [3])]


def test_distribute_weights_localities_for_the_proxy_it_names_and_drops_the_rest() -> None:
    lb = """{localityLbSetting: {distribute: [{from: us/us-a/*, to: {"us/us-a/*": 80, "eu/*": 20}}]}}"""
    mesh, applied = _mesh(_rule(lb, outlier=False))
    assert _eds(mesh, applied, ("us", "us-a", "")) == [
        (0, "eu/eu-a", 20, [3]),
        (0, "us/us-a", 40, [0]),
        (0, "us/us-a/rack1", 40, [1]),
    ]
    # another proxy's locality matches no ``from``: the registry's weights
    assert len(_eds(mesh, applied, ("ap", "ap-a", ""))) == 5
    gen = ClusterGenerator()
    gen.use_policy(applied)
    [c] = [
        json_format.MessageToDict(r.message) for r in gen.generate(mesh, NodeInfo("n")) if r.name == "outbound|80|web"
    ]
    assert c["commonLbConfig"] == {"localityWeightedLbConfig": {}}


def test_enabled_false_turns_locality_lb_off() -> None:
    mesh, applied = _mesh(_rule("{localityLbSetting: {enabled: false}}"))
    assert {p for p, *_ in _eds(mesh, applied, ("us", "us-a", ""))} == {0}


def _cluster(lb: str) -> dict[str, Any]:
    mesh, applied = _mesh(_rule(lb, outlier=False))
    gen = ClusterGenerator()
    gen.use_policy(applied)
    [c] = [
        json_format.MessageToDict(r.message) for r in gen.generate(mesh, NodeInfo("n")) if r.name == "outbound|80|web"
    ]
    return c


def test_warmup_becomes_slow_start_on_round_robin_and_least_request_only() -> None:
    assert _cluster("{simple: ROUND_ROBIN, warmupDurationSecs: 30s}")["roundRobinLbConfig"] == {
        "slowStartConfig": {"slowStartWindow": "30s"}
    }
    c = _cluster("{simple: LEAST_REQUEST, warmup: {duration: 10s, minimumPercent: 20, aggression: 2}}")
    assert c["leastRequestLbConfig"]["slowStartConfig"] == {
        "slowStartWindow": "10s",
        "aggression": {"defaultValue": 2.0, "runtimeKey": "upstream.slow_start.aggression"},
        "minWeightPercent": {"value": 20.0},
    }
    c = _cluster("{simple: RANDOM, warmupDurationSecs: 30s}")
    assert "roundRobinLbConfig" not in c and "leastRequestLbConfig" not in c
