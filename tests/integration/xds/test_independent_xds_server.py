"""A sidecar configured by an xDS server that is not Pilot (tiny_ads.py, written from xds-protos):
HTTP proxying by its resources, live endpoint and listener changes, and NACKs."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sofamesh.testing import UpstreamServer, free_port
from tests.integration.xds.mesh import Sidecar, http_get, wait_for
from tests.integration.xds.tiny_ads import CDS, LDS, RDS, TinyAds, http_listener, route_config, static_cluster


@pytest.fixture
def ads() -> Iterator[TinyAds]:
    with TinyAds() as server:
        yield server


@pytest.fixture
def ups() -> Iterator[dict[str, UpstreamServer]]:
    servers = {n: UpstreamServer(n).__enter__() for n in ("a", "b")}
    try:
        yield servers
    finally:
        for s in servers.values():
            s.__exit__()


def _who(address: str) -> str:
    status, body = http_get(address, "anything", "/x")
    assert status == 200
    return body.split()[0].decode()


def test_a_sidecar_proxies_http_by_config_from_an_independent_xds_server(
        ads: TinyAds, ups: dict[str, UpstreamServer]) -> None:
    first = f"127.0.0.1:{free_port()}"
    ads.set(CDS, [static_cluster("web", [ups["a"].address])])
    ads.set(LDS, [http_listener("in", first, routes=route_config("inline", [("/", "web")]))])
    with Sidecar(ads.port, "tiny-1") as sc:
        assert _who(first) == "a"
        # An endpoint-only change moves traffic and leaves the listener's runtime alone.
        v = ads.set(CDS, [static_cluster("web", [ups["b"].address])])
        wait_for(lambda: ads.acked(CDS, v), 10, "the CDS update to be ACKed")
        assert _who(first) == "b"
        assert sc.dump()["xds"]["types"]["cds"]["version"] == v
        # A listener moved to a new address: the new one serves, the old one stops accepting.
        second = f"127.0.0.1:{free_port()}"
        v = ads.set(LDS, [http_listener("in2", second, routes=route_config("inline", [("/", "web")]))])
        wait_for(lambda: ads.acked(LDS, v), 10, "the LDS update to be ACKed")
        assert _who(second) == "b"
        with pytest.raises(urllib.error.URLError):
            http_get(first, "anything", "/x", timeout=2)
        assert [lst["name"] for lst in sc.dump()["config"]["listeners"]] == ["in2"]
        assert ads.nacks() == []
        # A local reload would be overwritten by the next update: it is refused.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(sc.admin_url + "/reload", data=b"", method="POST"),
                                   timeout=5)
        assert refused.value.code == 400
        refused.value.close()


def test_a_route_naming_an_unknown_cluster_is_nacked_and_the_previous_config_keeps_serving(
        ads: TinyAds, ups: dict[str, UpstreamServer]) -> None:
    address = f"127.0.0.1:{free_port()}"
    ads.set(CDS, [static_cluster("web", [ups["a"].address])])
    ads.set(LDS, [http_listener("in", address, rds="r1")])
    good = ads.set(RDS, [route_config("r1", [("/", "web")])])
    with Sidecar(ads.port, "tiny-2") as sc:
        assert _who(address) == "a"
        bad = ads.set(RDS, [route_config("r1", [("/api", "web"), ("/", "nope")])])
        nack = wait_for(lambda: [n for n in ads.nacks() if n.type_url == RDS], 10, "the RDS NACK")[0]
        assert "RouteConfiguration 'r1'" in nack.error_detail.message
        assert "unknown cluster 'nope'" in nack.error_detail.message
        assert nack.version_info == good  # the version it keeps, as Envoy reports it
        # The previous routes keep serving; the admin shows the applied version and the NACK.
        assert _who(address) == "a"
        xds = sc.dump()["xds"]
        assert xds["types"]["rds"]["version"] == good
        assert xds["types"]["rds"]["status"] == "NACKED"
        assert xds["last_nack"]["version"] == bad
        assert "unknown cluster 'nope'" in xds["last_nack"]["error"]
        # A fixed config is taken again.
        fixed = ads.set(RDS, [route_config("r1", [("/", "web")]), ])
        wait_for(lambda: ads.acked(RDS, fixed), 10, "the fixed RDS to be ACKed")
        assert sc.dump()["xds"]["types"]["rds"]["status"] == "ACKED"


def test_routes_sent_before_the_clusters_they_name_are_applied_once_cds_brings_them(
        ads: TinyAds, ups: dict[str, UpstreamServer]) -> None:
    """A management server may answer a new RDS subscription before it pushes the CDS its routes
    need: the update is NACKed, kept, and applied (and ACKed) when a CDS update brings the clusters."""
    address = f"127.0.0.1:{free_port()}"
    ads.set(CDS, [static_cluster("web", [ups["a"].address])])
    ads.set(LDS, [http_listener("in", address, rds="r1")])
    ads.set(RDS, [route_config("r1", [("/", "web")])])
    with Sidecar(ads.port, "tiny-late") as sc:
        assert _who(address) == "a"
        early = ads.set(RDS, [route_config("r1", [("/", "late")])])
        wait_for(lambda: [n for n in ads.nacks() if n.type_url == RDS], 10, "the RDS NACK")
        assert _who(address) == "a"  # the previous routes keep serving meanwhile
        assert "unknown cluster 'late'" in sc.dump()["xds"]["last_nack"]["error"]
        v = ads.set(CDS, [static_cluster("web", [ups["a"].address]), static_cluster("late", [ups["b"].address])])
        wait_for(lambda: ads.acked(CDS, v) and ads.acked(RDS, early), 10, "the waiting RDS to be ACKed")
        assert _who(address) == "b"
        xds = sc.dump()["xds"]
        assert xds["types"]["rds"]["version"] == early and xds["types"]["rds"]["status"] == "ACKED"
        assert xds["last_nack"] is None  # withdrawn: that version is applied


def test_an_unsupported_field_is_nacked_with_its_name(ads: TinyAds, ups: dict[str, UpstreamServer]) -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    address = f"127.0.0.1:{free_port()}"
    ads.set(CDS, [static_cluster("web", [ups["a"].address])])
    ads.set(LDS, [http_listener("in", address, routes=route_config("inline", [("/", "web")]))])
    with Sidecar(ads.port, "tiny-3") as sc:
        ring = static_cluster("web", [ups["b"].address])
        ring.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        ads.set(CDS, [ring])
        nack = wait_for(lambda: [n for n in ads.nacks() if n.type_url == CDS], 10, "the CDS NACK")[0]
        assert nack.error_detail.message == ("Cluster 'web': lb_policy: CLUSTER_PROVIDED is not supported "
                                             "(ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)")
        assert _who(address) == "a"
        assert sc.dump()["xds"]["last_nack"]["type"] == "cds"


def test_a_starting_sidecar_holds_its_xds_listeners_until_the_config_is_complete(
        ads: TinyAds, ups: dict[str, UpstreamServer]) -> None:
    """Envoy's init manager: a starting sidecar's listeners accept only once the first complete
    config is in (here: the EDS of the cluster its route names), so a request that arrives early
    waits for it and is proxied, not answered 503 for want of endpoints."""
    import socket
    import threading

    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.core.v3 import config_source_pb2
    from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
    from google.protobuf import duration_pb2

    from tests.integration.xds.tiny_ads import EDS, socket_address

    address = f"127.0.0.1:{free_port()}"
    ads.set(CDS, [cluster_pb2.Cluster(
        name="web", type=cluster_pb2.Cluster.EDS, connect_timeout=duration_pb2.Duration(seconds=1),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3)))])
    lds = ads.set(LDS, [http_listener("in", address, routes=route_config("inline", [("/", "web")]))])
    sc = Sidecar(ads.port, "tiny-held")
    started = threading.Thread(target=sc.start)  # ready only with the config complete
    started.start()
    try:
        wait_for(lambda: ads.acked(LDS, lds), 20, "the listener to be ACKed")
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as early:  # the listening socket is bound
            early.sendall(b"GET /early HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
            early.settimeout(1.5)
            with pytest.raises(TimeoutError):  # held: no 503 "no healthy upstream"
                early.recv(1024)
            ads.set(EDS, [endpoint_pb2.ClusterLoadAssignment(cluster_name="web", endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                    endpoint=endpoint_components_pb2.Endpoint(address=socket_address(ups["a"].address)))])])])
            early.settimeout(10)
            answer = b""
            while chunk := early.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"a GET /early" in answer, answer[-200:]
        started.join(30)
        assert not started.is_alive()
    finally:
        started.join(30)
        sc.stop(check=False)
