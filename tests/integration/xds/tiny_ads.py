"""A second, independent xDS server for the tests: a small state-of-the-world ADS server written
here from xds-protos (no Pilot code), serving whatever resources the test sets, recording every
request it receives (ACKs and NACKs)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

T = "type.googleapis.com/envoy.config."
LDS, RDS, CDS, EDS = (T + "listener.v3.Listener", T + "route.v3.RouteConfiguration", T + "cluster.v3.Cluster",
                      T + "endpoint.v3.ClusterLoadAssignment")


def pack(m: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(m)
    return a


def socket_address(address: str) -> address_pb2.Address:
    host, port = address.rsplit(":", 1)
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=int(port)))


def static_cluster(name: str, endpoints: list[str]) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration_pb2.Duration(seconds=1),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                    address=socket_address(e))) for e in endpoints])]))


def route_config(name: str, routes: list[tuple[str, str]]) -> route_pb2.RouteConfiguration:
    """``routes``: (path prefix, cluster) pairs under one virtual host for every domain."""
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[route_components_pb2.VirtualHost(
        name="all", domains=["*"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=prefix),
            route=route_components_pb2.RouteAction(cluster=cluster, timeout=duration_pb2.Duration(seconds=5)))
            for prefix, cluster in routes])])


def http_listener(name: str, address: str, *, rds: str | None = None,
                  routes: route_pb2.RouteConfiguration | None = None) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name, http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                                           typed_config=pack(router_pb2.Router()))])
    if rds is not None:
        hcm.rds.CopyFrom(hcm_pb2.Rds(route_config_name=rds, config_source=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3)))
    elif routes is not None:
        hcm.route_config.CopyFrom(routes)
    return listener_pb2.Listener(name=name, address=socket_address(address), filter_chains=[
        listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))])])


class TinyAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """SotW ADS: every type the client asks for gets the current resources of that type whenever
    their version differs from what was last sent on that stream."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: dict[str, tuple[str, list[Message]]] = {}
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.streams: list[queue.Queue[Any]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self._versions = 0

    def __enter__(self) -> TinyAds:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for q in list(self.streams):
            q.put(None)
        self.server.stop(0).wait(5)

    def set(self, type_url: str, resources: list[Message]) -> str:
        with self.lock:
            self._versions += 1
            version = f"v{self._versions}"
            self.snapshot[type_url] = (version, list(resources))
            streams = list(self.streams)
        for q in streams:
            q.put(("push", type_url))
        return version

    def nacks(self) -> list[discovery_pb2.DiscoveryRequest]:
        with self.lock:
            return [r for r in self.requests if r.HasField("error_detail")]

    def acked(self, type_url: str, version: str) -> bool:
        with self.lock:
            return any(r.type_url == type_url and r.version_info == version and not r.HasField("error_detail")
                       for r in self.requests)

    def StreamAggregatedResources(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        q: queue.Queue[Any] = queue.Queue()
        with self.lock:
            self.streams.append(q)

        def read() -> None:
            try:
                for req in request_iterator:
                    q.put(("req", req))
            except grpc.RpcError:
                pass
            q.put(None)

        threading.Thread(target=read, daemon=True).start()
        sent: dict[str, str] = {}
        nonce = 0
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                kind, payload = item
                if kind == "req":
                    with self.lock:
                        self.requests.append(payload)
                    url = payload.type_url
                    if url in sent:
                        continue  # an ACK or NACK of what was sent
                    sent[url] = ""
                else:
                    url = payload
                    if url not in sent:
                        continue
                with self.lock:
                    version, resources = self.snapshot.get(url, ("", []))
                if not version or sent[url] == version:
                    continue
                sent[url] = version
                nonce += 1
                yield discovery_pb2.DiscoveryResponse(type_url=url, version_info=version, nonce=str(nonce),
                                                      resources=[pack(r) for r in resources])
        finally:
            with self.lock:
                self.streams.remove(q)
