"""Instances are meshed by the sidecars that connect naming them (as Istio's injector labels a
pod), kept for a grace period after the sidecar goes, and never over a registration label."""

from __future__ import annotations

from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.sidecars import ConnectedSidecars
from tests.unit.pilot.policy.test_hosts_and_entries import Fixed

TLS = "security.istio.io/tlsMode"
SIDECAR = {"sofamesh.mtls": True, "sofamesh.instances": "w1", "SERVICE_ACCOUNT": "web", "NAMESPACE": "prod"}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _mesh(sidecars: ConnectedSidecars) -> MeshModel:
    mesh = MeshModel(
        [
            Fixed(
                [Service("web", protocol="http", ports=(80,))],
                [
                    ServiceInstance("web", "w1", "10.0.0.1", 80),
                    ServiceInstance("web", "w2", "10.0.0.2", 80),
                    ServiceInstance("web", "w3", "10.0.0.3", 80, labels={TLS: "disabled"}),
                ],
            )
        ]
    )
    mesh.overlay = sidecars.labels_for
    mesh.refresh()
    return mesh


def _labels(mesh: MeshModel) -> dict[str, dict[str, str]]:
    return {i.id: dict(i.labels) for i in mesh.instances("web")}


def test_a_sidecar_with_a_certificate_meshes_the_instances_it_names_with_its_identity() -> None:
    sidecars = ConnectedSidecars(grace_s=5, clock=Clock())
    mesh = _mesh(sidecars)
    assert _labels(mesh)["w1"] == {}
    assert sidecars.connected(1, SIDECAR)
    assert mesh.refresh() == {"web"}
    labels = _labels(mesh)
    assert labels["w1"] == {TLS: "istio", "sofamesh.io/service-account": "web", "sofamesh.io/namespace": "prod"}
    assert labels["w2"] == {} and labels["w3"] == {TLS: "disabled"}
    # By address (Istio's INSTANCE_IPS); a registration label is not overridden.
    assert sidecars.connected(2, {"sofamesh.mtls": True, "INSTANCE_IPS": "10.0.0.2,10.0.0.3"})
    mesh.refresh()
    labels = _labels(mesh)
    assert labels["w2"] == {TLS: "istio"} and labels["w3"] == {TLS: "disabled"}


def test_the_identity_of_a_verified_client_certificate_wins_over_node_metadata() -> None:
    sidecars = ConnectedSidecars(grace_s=5, clock=Clock())
    mesh = _mesh(sidecars)
    assert sidecars.connected(1, SIDECAR, certified=("shop", "cart"))
    mesh.refresh()
    assert _labels(mesh)["w1"] == {TLS: "istio", "sofamesh.io/service-account": "cart", "sofamesh.io/namespace": "shop"}
    assert sidecars.describe()["identity_from"] == {1: "certificate"}
    assert sidecars.connected(1, SIDECAR)  # the same stream id, now without a certificate: the metadata's
    mesh.refresh()
    assert _labels(mesh)["w1"]["sofamesh.io/service-account"] == "web"
    assert sidecars.describe()["identity_from"] == {1: "metadata"}


def test_a_proxy_without_a_certificate_or_without_instances_meshes_nothing() -> None:
    sidecars = ConnectedSidecars()
    assert not sidecars.connected(1, {"sofamesh.instances": "w1"})
    assert not sidecars.connected(2, {"sofamesh.mtls": True})
    assert not sidecars.connected(3, {"sofamesh.mtls": "true", "sofamesh.instances": "w1"})
    assert sidecars.labels_for("w1", "10.0.0.1") is None


def test_a_sidecar_that_goes_keeps_its_instances_meshed_for_the_grace_period() -> None:
    clock = Clock()
    sidecars = ConnectedSidecars(grace_s=5, clock=clock)
    mesh = _mesh(sidecars)
    sidecars.connected(1, SIDECAR)
    mesh.refresh()
    sidecars.disconnected(1)
    clock.now += 4
    assert not sidecars.expire()
    assert _labels(mesh)["w1"][TLS] == "istio"
    sidecars.connected(7, SIDECAR)  # it came back: nothing changes when the old stream expires
    clock.now += 2
    assert not sidecars.expire()
    sidecars.disconnected(7)
    clock.now += 6
    assert sidecars.expire()
    assert mesh.refresh() == {"web"}
    assert _labels(mesh)["w1"] == {}
    assert sidecars.describe() == {"connected": 0, "in_grace": 0, "instances": [], "addresses": [],
                                   "identity_from": {}}
