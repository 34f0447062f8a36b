"""``describe service``: instances with the registry holding each, and which policy resources apply
to the service (hosts, host, workload selectors, namespaces), as Istio scopes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sofamesh.pilot.describe import describe_service, summary
from sofamesh.pilot.model import Health, MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.documents import parse_stream
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.store import StoredDocument

POLICY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-route, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-dr, namespace: default}
spec: {host: reviews.default.svc.cluster.local, subsets: [{name: v2, labels: {version: v2}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-dr, namespace: default}
spec: {host: ratings}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-elsewhere, namespace: other}
spec: {host: reviews}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: v2-only, namespace: default}
spec: {selector: {matchLabels: {version: v2}}, action: ALLOW, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: v3-only, namespace: default}
spec: {selector: {matchLabels: {version: v3}}, action: ALLOW, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""


class Registry:
    def __init__(self, name: str, instances: Sequence[ServiceInstance]) -> None:
        self.name = name
        self._instances = list(instances)

    def services(self) -> Mapping[str, Service]:
        return {i.service: Service(i.service, "http") for i in self._instances}

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return [i for i in self._instances if i.service == service]


def _pilot(edges: list[dict[str, Any]]) -> Any:
    zk = Registry("zk", [ServiceInstance("reviews", "r1", "10.0.0.1", 9080, labels={"version": "v1"})])
    etcd = Registry(
        "etcd",
        [
            ServiceInstance("reviews", "r2", "10.0.0.2", 9080, labels={"version": "v2"}, health=Health.UNHEALTHY),
            ServiceInstance("ratings", "t1", "10.0.0.3", 9080),
        ],
    )
    model = MeshModel([zk, etcd])
    model.refresh()
    policy = PolicyModel()
    policy.sync([StoredDocument(Source("p.yaml", d.document, d.line, d.lines), d.body) for d in parse_stream(POLICY)])
    return SimpleNamespace(
        model=model, registries=[zk, etcd], policy=policy, traffic=SimpleNamespace(edges=lambda: edges)
    )


def test_describe_lists_instances_per_registry_and_the_resources_that_apply() -> None:
    edges = [
        {"source": "productpage", "destination": "reviews", "rps": 3.0},
        {"source": "reviews", "destination": "ratings", "rps": 2.0},
    ]
    doc = describe_service(_pilot(edges), "reviews")
    assert doc is not None
    assert [(i["id"], i["registry"], i["health"]) for i in doc["instances"]] == [
        ("r1", "zk", "healthy"),
        ("r2", "etcd", "unhealthy"),
    ]
    assert sorted((p["kind"], p["namespace"], p["name"]) for p in doc["policies"]) == [
        ("AuthorizationPolicy", "default", "v2-only"),  # selects r2; v3-only selects no instance
        ("DestinationRule", "default", "reviews-dr"),  # the FQDN host
        ("PeerAuthentication", "istio-system", "mesh"),  # root namespace, no selector: the whole mesh
        ("VirtualService", "default", "reviews-route"),
    ]  # ratings-dr names another service; reviews-elsewhere means reviews.other, which does not exist
    assert doc["callers"] == [edges[0]]
    assert describe_service(_pilot([]), "nothing") is None


def test_the_services_list_counts_instances_by_registry_and_health() -> None:
    s = summary(_pilot([]), "reviews")
    assert s["instances"] == 2 and s["by_registry"] == {"etcd": 1, "zk": 1}
    assert s["by_health"] == {"healthy": 1, "unhealthy": 1}


REJECTED = (Path(__file__).parents[2] / "data/rejected/policy.yaml").read_text()


def test_describe_lists_the_rejected_documents_that_name_the_service() -> None:
    pilot = _pilot([])
    docs = [
        StoredDocument(Source("p.yaml", d.document, d.line, d.lines), d.body)
        for d in parse_stream(POLICY + "---\n" + REJECTED)
    ]
    pilot.policy.sync(docs)
    pilot.config_store = SimpleNamespace(documents=lambda: docs)
    assert len(pilot.policy.rejections()) == 3
    doc = describe_service(pilot, "reviews")
    assert doc is not None
    (bad,) = doc["rejected"]  # ratings-broken names ratings; reviews-other-broken means reviews.other
    assert bad["ref"] == "VirtualService default/reviews-broken" and bad["source"].startswith("p.yaml:")
    assert bad["errors"] and "weight" in bad["errors"][0]
    assert [p["name"] for p in doc["policies"] if p["kind"] == "VirtualService"] == ["reviews-route"]
    (ratings,) = describe_service(pilot, "ratings")["rejected"]  # type: ignore[index]
    assert ratings["ref"] == "DestinationRule default/ratings-broken" and "FASTEST" in ratings["errors"][0]
