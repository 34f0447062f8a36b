"""Host resolution for xDS generation, and ServiceEntry/WorkloadEntry as mesh services."""

from __future__ import annotations

from pathlib import Path

from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.policy.documents import parse_stream
from sofamesh.pilot.policy.entries import PolicyInstances
from sofamesh.pilot.policy.hosts import HostIndex, fqdn, subset_instances
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.store import StoredDocument

DATA = Path(__file__).parents[3] / "data"


class Fixed:
    def __init__(self, services: list[Service], instances: list[ServiceInstance]) -> None:
        self._s = {s.name: s for s in services}
        self._i = instances

    def services(self) -> dict[str, Service]:
        return self._s

    def instances(self, name: str) -> list[ServiceInstance]:
        return [i for i in self._i if i.service == name]


def test_a_registry_service_is_its_name_and_the_kubernetes_forms_of_it() -> None:
    mesh = MeshModel([Fixed([Service("reviews"), Service("com.example.EchoService:1.0", "bolt"),
                             Service("ratings", metadata={"namespace": "prod"})], [])])
    mesh.refresh()
    index = HostIndex(mesh)
    for host in ("reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"):
        assert index.service_for(host) == "reviews"
    assert index.service_for("reviews", "prod") is None  # a short host resolves in the resource's namespace
    assert index.service_for("ratings", "prod") == "ratings"
    assert index.service_for("com.example.EchoService:1.0", "any") == "com.example.EchoService:1.0"
    assert fqdn("reviews", "bookinfo") == "reviews.bookinfo.svc.cluster.local"
    assert fqdn("reviews.example.com", "bookinfo") == "reviews.example.com"


def test_subsets_select_instances_by_registry_labels_or_version() -> None:
    insts = [ServiceInstance("reviews", "a", "10.0.0.1", 9080, labels={"version": "v1"}),
             ServiceInstance("reviews", "b", "10.0.0.2", 9080, version="v2"),
             ServiceInstance("reviews", "c", "10.0.0.3", 9080, labels={"version": "v3", "zone": "z"})]
    assert [i.id for i in subset_instances(insts, {"version": "v2"})] == ["b"]
    assert [i.id for i in subset_instances(insts, {"version": "v3", "zone": "z"})] == ["c"]
    assert [i.id for i in subset_instances(insts, {})] == ["a", "b", "c"]


WORKLOADS = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: provider-v1, namespace: meta-dubbo}
spec:
  address: 10.0.0.11
  labels: {app: dubbo-sample-provider, version: v1}
  ports: {tcp-metaprotocol-dubbo: 20881}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: provider-v2, namespace: meta-dubbo}
spec:
  address: 10.0.0.12
  labels: {app: dubbo-sample-provider, version: v2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: elsewhere, namespace: other}
spec:
  address: 10.0.0.13
  labels: {app: dubbo-sample-provider}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-db}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
  resolution: DNS
"""


def _docs(text: str, origin: str) -> list[StoredDocument]:
    return [StoredDocument(Source(origin, d.document, d.line, d.lines), d.body) for d in parse_stream(text)]


def test_aeraki_service_entry_becomes_the_interface_with_its_workload_entries_as_instances() -> None:
    policy = PolicyModel()
    source = PolicyInstances(policy)
    mesh = MeshModel([source])
    policy.add_listener(lambda keys: mesh.refresh(source.rebuild()))
    policy.sync(_docs((DATA / "aeraki-dubbo" / "serviceentry.yaml").read_text(), "se.yaml")
                + _docs(WORKLOADS, "we.yaml"))
    svc = mesh.service("org.apache.dubbo.samples.basic.api.DemoService")
    assert svc is not None and svc.protocol == "dubbo" and svc.ports == (20880,)
    insts = mesh.instances(svc.name)
    assert [(i.address, i.port, i.labels.get("version")) for i in insts] == [
        ("10.0.0.11", 20881, "v1"), ("10.0.0.12", 20880, "v2")]
    index = HostIndex(mesh)
    assert index.service_for("org.apache.dubbo.samples.basic.api.demoservice", "meta-dubbo") == svc.name
    db = mesh.instances("db.example.com")
    assert [(i.address, i.port) for i in db] == [("db.example.com", 5432)]
    # the WorkloadEntry goes: its instance goes with it
    policy.sync(_docs((DATA / "aeraki-dubbo" / "serviceentry.yaml").read_text(), "se.yaml")
                + _docs(WORKLOADS.split("---")[1], "we.yaml"))
    assert [i.address for i in mesh.instances(svc.name)] == ["10.0.0.12"]


def test_a_rejected_document_keeps_the_last_accepted_version() -> None:
    policy = PolicyModel()
    good = (DATA / "bookinfo" / "virtual-service-reviews-80-20.yaml").read_text()
    policy.sync(_docs(good, "vs.yaml"))
    [before] = policy.resources("VirtualService")
    changed = policy.sync(_docs(good.replace("weight: 80", "weight: -80"), "vs.yaml"))
    assert changed == frozenset()
    assert policy.resources("VirtualService") == [before]
    [rejected] = policy.rejections()
    assert rejected.lines() == ["vs.yaml:13 (document 1) VirtualService default/reviews: "
                                "spec.http[0].route[0].weight: weight -80 < 0"]
    assert policy.sync([]) == frozenset({before.key})  # gone from the store: gone
