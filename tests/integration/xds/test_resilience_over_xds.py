"""Envoy's resilience fields over xDS: the sidecar takes the very Listener and Cluster a real Envoy
runs scenario (a) with (tests/integration/resilience), from an independent ADS server, and behaves
as that Envoy does: retries on other hosts, the bad endpoint ejected after consecutive_5xx."""

from __future__ import annotations

import json

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the Any types)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from google.protobuf import json_format

from sofamesh.testing import free_port
from tests.integration.resilience.peers import Backend
from tests.integration.resilience.test_http_against_envoy import (
    CONSECUTIVE_5XX,
    failing_endpoint_resources,
    observe_failing_endpoint,
)
from tests.integration.xds.mesh import Sidecar, wait_for
from tests.integration.xds.tiny_ads import CDS, LDS, TinyAds


def test_envoys_retry_and_outlier_resources_drive_the_sidecar_as_they_drive_envoy() -> None:
    with Backend("good1") as g1, Backend("good2") as g2, Backend("bad", status=503) as bad, TinyAds() as ads:
        port = free_port()
        listeners, clusters = failing_endpoint_resources(port, [g1.address, g2.address, bad.address])
        ads.set(CDS, [json_format.ParseDict(c, cluster_pb2.Cluster()) for c in clusters])
        ads.set(LDS, [json_format.ParseDict(lst, listener_pb2.Listener()) for lst in listeners])
        with Sidecar(ads.port, "resilience-1") as sc:
            wait_for(lambda: any(lst["name"] == "web" for lst in sc.dump()["config"]["listeners"]), 10,
                     "the listener from LDS")
            seen = observe_failing_endpoint(port, [g1, g2], bad)
            endpoints = json.loads(sc.get("/clusters"))["web"]["endpoints"]
            stats = sc.stats()["clusters"]["web"]
        assert ads.nacks() == []
    assert seen == {"errors": 0, "bad_requests": CONSECUTIVE_5XX, "served": 1000, "attempt_counts": {"1", "2"}}
    assert {e["address"]: e["health_flags"] for e in endpoints}[bad.address] == "/failed_outlier_check"
    assert stats["outlier_detection_ejections_enforced_consecutive_5xx"] == 1
    assert stats["upstream_rq_retry"] == stats["upstream_rq_retry_success"] == CONSECUTIVE_5XX
