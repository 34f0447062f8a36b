"""Envoy's balancing and health-check fields over xDS: the sidecar takes the very Listener and
Cluster a real Envoy runs scenarios (c) and (d) with (tests/integration/resilience), from an
independent ADS server, and behaves as that Envoy does: the same keys on the same backends, and
priority 1 serving once priority 0 fails its health checks."""

from __future__ import annotations

from collections import Counter

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the Any types)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from google.protobuf import json_format

from sofamesh.testing import free_port
from tests.integration.resilience.peers import Backend, StaticEnvoy
from tests.integration.resilience.test_lb_against_envoy import (
    failover_resources,
    hash_resources,
    keyed,
    names,
    settled,
)
from tests.integration.xds.mesh import Sidecar, wait_for
from tests.integration.xds.tiny_ads import CDS, LDS, TinyAds


def _serve(ads: TinyAds, listeners: list[dict[str, object]], clusters: list[dict[str, object]]) -> None:
    ads.set(CDS, [json_format.ParseDict(c, cluster_pb2.Cluster()) for c in clusters])
    ads.set(LDS, [json_format.ParseDict(lst, listener_pb2.Listener()) for lst in listeners])


def test_envoys_ring_hash_resources_put_each_key_where_envoy_puts_it() -> None:
    with Backend("b1") as b1, Backend("b2") as b2, Backend("b3") as b3, TinyAds() as ads:
        addresses = [b1.address, b2.address, b3.address]
        port = free_port()
        with StaticEnvoy(*hash_resources(port, "ring_hash", addresses)):
            envoy = keyed(port)
        port = free_port()
        _serve(ads, *hash_resources(port, "ring_hash", addresses))
        with Sidecar(ads.port, "lb-1") as sc:
            wait_for(lambda: any(lst["name"] == "web" for lst in sc.dump()["config"]["listeners"]), 10,
                     "the listener from LDS")
            sidecar = keyed(port)
        assert ads.nacks() == []
    assert sidecar == envoy and "?" not in envoy.values() and len(set(envoy.values())) == 3


def test_envoys_priorities_and_health_checks_fail_over_in_the_sidecar() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with Backend("p1") as p1, TinyAds() as ads:
        port = free_port()
        _serve(ads, *failover_resources(port, [[dead], [p1.address]]))
        with Sidecar(ads.port, "lb-2") as sc:
            wait_for(lambda: any(lst["name"] == "web" for lst in sc.dump()["config"]["listeners"]), 10,
                     "the listener from LDS")
            flags = settled(sc, {dead: "/failed_active_hc", p1.address: "healthy"})
            served = Counter(names(port, [{}] * 50))
        assert ads.nacks() == []
    assert flags == {dead: "/failed_active_hc", p1.address: "healthy"}
    assert served == {"p1": 50}
