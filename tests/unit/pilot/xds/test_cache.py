"""Snapshots name the snapshot they replaced and what changed since it: what an incremental push sends."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from envoy.config.cluster.v3 import cluster_pb2

from sofamesh.pilot.model import MeshModel
from sofamesh.pilot.xds.cache import SnapshotCache
from sofamesh.pilot.xds.generator import CLUSTER, NodeInfo, XdsResource


class Clusters:
    """A generator whose output the test sets: cluster name -> connect timeout seconds."""

    type_url = CLUSTER

    def __init__(self) -> None:
        self.timeouts: dict[str, int] = {}

    def scope(self, node: NodeInfo) -> Hashable:
        return None

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        for name, seconds in self.timeouts.items():
            c = cluster_pb2.Cluster(name=name)
            c.connect_timeout.seconds = seconds
            yield XdsResource(name, c)


def test_a_rebuilt_snapshot_names_only_the_resources_added_changed_or_removed() -> None:
    gen = Clusters()
    gen.timeouts = {"a": 1, "b": 1, "c": 1}
    cache = SnapshotCache(MeshModel(), [("clusters", gen)])
    node = NodeInfo("n1")
    first = cache.get(CLUSTER, node)
    assert first.previous == "" and first.changed == frozenset()
    gen.timeouts = {"a": 1, "b": 2, "d": 1}  # b changed, c removed, d added
    cache.invalidate()
    second = cache.get(CLUSTER, node)
    assert second.previous == first.version and second.changed == {"b", "c", "d"}
    cache.invalidate()  # nothing changed: same version, and the same changes since the one before
    third = cache.get(CLUSTER, node)
    assert third.version == second.version and (third.previous, third.changed) == (first.version, second.changed)
