"""The ADS server as a client sees it: SotW and delta, ACK/NACK by nonce, scoped and debounced pushes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from sofamesh.pilot.app import Pilot
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT, LISTENER, ROUTE

from ..conftest import run, running_pilot


class AdsClient:
    """One ADS stream; ``send`` requests, ``recv`` responses with a timeout."""

    def __init__(
        self, channel: grpc.aio.Channel, delta: bool, node_id: str, metadata: dict[str, Any]
    ) -> None:
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.node = base_pb2.Node(id=node_id, cluster="test")
        if metadata:
            self.node.metadata.CopyFrom(struct_pb2.Struct())
            self.node.metadata.update(metadata)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self.call = method(self._requests())
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._reader: asyncio.Future[None] | None = None

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            yield await self.outbox.get()

    def send(
        self,
        type_url: str,
        names: list[str] | None = None,
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        req = discovery_pb2.DiscoveryRequest(
            node=self.node,
            type_url=type_url,
            resource_names=names or [],
            response_nonce=nonce,
            version_info=version,
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.outbox.put_nowait(req)

    def send_delta(
        self,
        type_url: str,
        subscribe: list[str] = (),
        unsubscribe: list[str] = (),  # type: ignore[assignment]
        nonce: str = "",
        initial: dict[str, str] | None = None,
        error: str | None = None,
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            node=self.node,
            type_url=type_url,
            resource_names_subscribe=subscribe,
            resource_names_unsubscribe=unsubscribe,
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.outbox.put_nowait(req)

    async def recv(self, timeout: float = 5) -> Any:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read_all())
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def _read_all(self) -> None:
        while True:
            msg = await self.call.read()
            if msg is grpc.aio.EOF:
                return
            self.inbox.put_nowait(msg)

    async def silent(self, seconds: float) -> bool:
        """True when nothing arrives for ``seconds``."""
        await asyncio.sleep(seconds)
        return self.inbox.empty()

    def close(self) -> None:
        self.call.cancel()
        if self._reader is not None:
            self._reader.cancel()


def _names(resp: Any, msg_type: Any) -> list[str]:
    out = []
    for r in resp.resources:
        any_msg = r.resource if hasattr(r, "resource") else r
        m = msg_type()
        any_msg.Unpack(m)
        out.append(getattr(m, "name", "") or getattr(m, "cluster_name", ""))
    return out


async def _register(pilot: Pilot, service: str, *ids: str, protocol: str = "grpc") -> None:
    reg = pilot.writable_registry()
    for n, i in enumerate(ids):
        await reg.register(
            Service(service, protocol),
            ServiceInstance(service=service, id=i, address="127.0.0.1", port=9000 + n),
            None,
        )


def ads(
    tmp_path: Path,
    scenario: Any,
    delta: bool = False,
    node: str = "n1",
    metadata: dict[str, Any] | None = None,
    timeout: float = 20,
    **pilot_config: Any,
) -> Any:
    async def main() -> Any:
        async with running_pilot(tmp_path / "data", **pilot_config) as pilot:
            await _register(pilot, "echo", "a", "b")
            await _register(pilot, "web", "w1", protocol="http")
            await _register(pilot, "rpc", "r1", protocol="bolt")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{pilot.xds_port}") as ch:
                client = AdsClient(ch, delta, node, metadata or {})
                try:
                    return await scenario(client, pilot)
                finally:
                    client.close()

    return run(main(), timeout)


def test_a_wildcard_cds_request_gets_every_cluster_and_an_ack_is_recorded(
    tmp_path: Path,
) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(CLUSTER)
        resp = await c.recv()
        # http/grpc clusters from the built-in generators, the Bolt one from the bolt plugin's own
        assert sorted(_names(resp, cluster_pb2.Cluster)) == ["outbound|12200|rpc", "outbound|80|echo",
                                                            "outbound|80|web"]
        assert resp.version_info and resp.nonce
        c.send(CLUSTER, nonce=resp.nonce, version=resp.version_info)
        assert await c.silent(0.3)  # an ACK is not answered
        state = pilot.ads.describe()["nodes"][0]
        assert state["node"] == "n1" and state["mode"] == "sotw"
        assert (
            state["types"]["cds"]["status"] == "ACKED"
            and state["types"]["cds"]["acked_version"] == resp.version_info
        )

    ads(tmp_path, scenario)


def test_a_nack_is_logged_and_recorded_with_node_type_and_detail_and_not_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(ENDPOINT, ["outbound|80|echo"])
        resp = await c.recv()
        c.send(ENDPOINT, ["outbound|80|echo"], nonce=resp.nonce, version="", error="bad endpoint")
        assert await c.silent(0.3)
        syncz = pilot.ads.describe()
        eds = syncz["nodes"][0]["types"]["eds"]
        assert eds["status"] == "NACKED" and eds["last_nack"]["error"] == "bad endpoint"
        assert eds["last_nack"]["rejected_version"] == resp.version_info
        assert syncz["recent_nacks"][0]["node"] == "n1" and syncz["recent_nacks"][0]["type"] == "eds"
        assert b'pilot_xds_nacks_total{type="eds"} 1.0' in pilot.metrics.render()

    with caplog.at_level(logging.WARNING, logger="sofamesh.pilot.xds"):
        ads(tmp_path, scenario)
    [record] = [r for r in caplog.records if r.name == "sofamesh.pilot.xds"]
    assert "NACK from node 'n1' type eds" in record.getMessage() and "bad endpoint" in record.getMessage()


def test_only_the_requested_endpoints_are_sent_and_a_stale_nonce_is_ignored(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(ENDPOINT, ["outbound|80|web"])
        first = await c.recv()
        assert _names(first, endpoint_pb2.ClusterLoadAssignment) == ["outbound|80|web"]
        c.send(
            ENDPOINT, ["outbound|80|web", "outbound|80|echo"], nonce=first.nonce, version=first.version_info
        )
        second = await c.recv()
        assert sorted(_names(second, endpoint_pb2.ClusterLoadAssignment)) == [
            "outbound|80|echo",
            "outbound|80|web",
        ]
        c.send(ENDPOINT, ["outbound|80|web"], nonce=first.nonce, version=first.version_info)  # stale
        assert await c.silent(0.3)
        # a change to a service the node did not ask for pushes nothing
        c.send(ENDPOINT, ["outbound|80|web"], nonce=second.nonce, version=second.version_info)
        third = await c.recv()
        c.send(ENDPOINT, ["outbound|80|web"], nonce=third.nonce, version=third.version_info)
        await _register(pilot, "echo", "c")
        assert await c.silent(0.5)
        await _register(pilot, "web", "w2", protocol="http")
        pushed = await c.recv()
        cla = endpoint_pb2.ClusterLoadAssignment()
        pushed.resources[0].Unpack(cla)
        assert len(cla.endpoints[0].lb_endpoints) == 2 and cla.endpoints[0].load_balancing_weight.value == 2

    ads(tmp_path, scenario)


def test_a_burst_of_changes_becomes_one_push(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(CLUSTER)
        resp = await c.recv()
        c.send(CLUSTER, nonce=resp.nonce, version=resp.version_info)
        await asyncio.sleep(0.4)  # the set-up registrations' own push has fired by now
        assert pilot._debouncer is not None
        fired = pilot._debouncer.fired
        for i in range(5):
            await _register(pilot, f"svc{i}", "x")
        pushed = await c.recv()
        assert len(pushed.resources) == 8  # 5 new + echo, web and the Bolt service rpc
        assert await c.silent(0.4)
        assert pilot._debouncer.fired == fired + 1

    ads(tmp_path, scenario, debounce={"quiet_ms": 300, "max_delay_ms": 3000})


def test_api_listeners_are_sent_by_name_only_and_end_with_the_router(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(LISTENER)
        wildcard = await c.recv()
        # the HTTP outbound listener; the Bolt and Dubbo egress listeners go to sofamesh sidecars only
        names = _names(wildcard, listener_pb2.Listener)
        assert names == ["outbound|15123"]
        outbound = listener_pb2.Listener()
        wildcard.resources[names.index("outbound|15123")].Unpack(outbound)
        assert outbound.address.socket_address.port_value == 15123
        c.send(LISTENER, ["echo", "web"], nonce=wildcard.nonce, version=wildcard.version_info)
        named = await c.recv()
        assert _names(named, listener_pb2.Listener) == ["echo"]  # web is http: no api_listener
        lis = listener_pb2.Listener()
        named.resources[0].Unpack(lis)
        hcm = hcm_pb2.HttpConnectionManager()
        lis.api_listener.api_listener.Unpack(hcm)
        assert hcm.http_filters[-1].name == "envoy.filters.http.router"
        assert hcm.route_config.virtual_hosts[0].routes[0].route.cluster == "outbound|80|echo"

    ads(tmp_path, scenario, metadata={"sofamesh.outbound_port": 15123})


def test_delta_sends_only_changed_resources_and_removals(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send_delta(CLUSTER, initial={"outbound|80|gone": "v0"})
        first = await c.recv()
        assert sorted(r.name for r in first.resources) == ["outbound|12200|rpc", "outbound|80|echo",
                                                           "outbound|80|web"]
        assert list(first.removed_resources) == ["outbound|80|gone"]
        c.send_delta(CLUSTER, nonce=first.nonce)
        c.send_delta(ENDPOINT, subscribe=["outbound|80|echo"])
        eds = await c.recv()
        assert [r.name for r in eds.resources] == ["outbound|80|echo"]
        c.send_delta(ENDPOINT, nonce=eds.nonce)
        await _register(pilot, "web", "w2", protocol="http")  # not subscribed in EDS, CDS unchanged
        assert await c.silent(0.5)
        await _register(pilot, "echo", "c")
        pushed = await c.recv()
        assert pushed.type_url == ENDPOINT and [r.name for r in pushed.resources] == ["outbound|80|echo"]
        c.send_delta(ENDPOINT, nonce=pushed.nonce, error="no thanks")
        c.send_delta(ENDPOINT, unsubscribe=["outbound|80|echo"])
        assert await c.silent(0.3)
        types = pilot.ads.describe()["nodes"][0]["types"]
        assert types["eds"]["status"] == "NACKED" and types["eds"]["names"] == []
        assert types["cds"]["status"] == "ACKED"

    ads(tmp_path, scenario, delta=True)


def test_route_config_names_follow_the_outbound_port(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(ROUTE, ["outbound|15001"])
        resp = await c.recv()
        from envoy.config.route.v3 import route_pb2

        rc = route_pb2.RouteConfiguration()
        resp.resources[0].Unpack(rc)
        assert rc.name == "outbound|15001"
        forms = ("{}", "{}.default", "{}.default.svc", "{}.default.svc.cluster.local")
        assert {vh.name: list(vh.domains) for vh in rc.virtual_hosts} == {
            name: [d for f in forms for d in (f.format(name), f.format(name) + ":*")] for name in ("echo", "web")}

    ads(tmp_path, scenario)


def test_a_policy_change_pushes_only_the_resources_it_changes_over_delta(tmp_path: Path) -> None:
    from sofamesh.pilot.policy.resource import Resource

    def resource(kind: str, spec: dict[str, Any]) -> Resource:
        return Resource("networking.istio.io/v1", kind, "default", "web", spec)

    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send_delta(CLUSTER)
        cds = await c.recv()
        c.send_delta(CLUSTER, nonce=cds.nonce)
        c.send_delta(ROUTE, subscribe=["outbound|15001"])
        rds = await c.recv()
        c.send_delta(ROUTE, nonce=rds.nonce)
        await pilot.config_store.put(resource("DestinationRule", {
            "host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}))
        pushed = await c.recv()  # a new subset: one new cluster, nothing else
        assert pushed.type_url == CLUSTER and [r.name for r in pushed.resources] == ["outbound|80|v1|web"]
        c.send_delta(CLUSTER, nonce=pushed.nonce)
        assert await c.silent(0.3)
        await pilot.config_store.put(resource("VirtualService", {
            "hosts": ["web"], "http": [{"route": [{"destination": {"host": "web", "subset": "v1"}}]}]}))
        pushed = await c.recv()  # the route moves to the subset: only the route config
        assert pushed.type_url == ROUTE and [r.name for r in pushed.resources] == ["outbound|15001"]
        c.send_delta(ROUTE, nonce=pushed.nonce)
        assert await c.silent(0.3)

    ads(tmp_path, scenario, delta=True)


def test_a_sotw_endpoint_change_sends_only_the_changed_assignment_while_cds_is_sent_whole(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(CLUSTER)
        cds = await c.recv()
        c.send(CLUSTER, nonce=cds.nonce, version=cds.version_info)
        both = ["outbound|80|echo", "outbound|80|web"]
        c.send(ENDPOINT, both)
        eds = await c.recv()
        assert sorted(_names(eds, endpoint_pb2.ClusterLoadAssignment)) == both
        c.send(ENDPOINT, both, nonce=eds.nonce, version=eds.version_info)
        assert await c.silent(0.3)
        await _register(pilot, "echo", "c")  # one more echo endpoint: EDS of echo alone, CDS unchanged
        pushed = await c.recv()
        assert pushed.type_url == ENDPOINT and _names(pushed, endpoint_pb2.ClusterLoadAssignment) == both[:1]
        cla = endpoint_pb2.ClusterLoadAssignment()
        pushed.resources[0].Unpack(cla)
        assert len(cla.endpoints[0].lb_endpoints) == 3
        c.send(ENDPOINT, both, nonce=pushed.nonce, version=pushed.version_info)
        assert await c.silent(0.3)
        assert pilot.ads.describe()["nodes"][0]["types"]["eds"]["status"] == "ACKED"
        await _register(pilot, "fresh", "f1", protocol="http")  # a new service: CDS is sent whole
        pushed = await c.recv()
        assert pushed.type_url == CLUSTER and len(pushed.resources) == 4
        c.send(CLUSTER, nonce=pushed.nonce, version=pushed.version_info)
        assert await c.silent(0.3)  # EDS: fresh is not subscribed, echo and web did not change

    ads(tmp_path, scenario)


def test_a_delta_subscription_to_more_names_gets_only_the_new_ones(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send_delta(ENDPOINT, subscribe=["outbound|80|echo"])
        first = await c.recv()
        assert [r.name for r in first.resources] == ["outbound|80|echo"]
        c.send_delta(ENDPOINT, nonce=first.nonce)
        c.send_delta(ENDPOINT, subscribe=["outbound|80|web", "outbound|80|echo"])
        more = await c.recv()
        assert [r.name for r in more.resources] == ["outbound|80|web"]  # echo is held at its version
        c.send_delta(ENDPOINT, nonce=more.nonce)
        await _register(pilot, "web", "w2", protocol="http")
        pushed = await c.recv()
        assert [r.name for r in pushed.resources] == ["outbound|80|web"] and not pushed.removed_resources
        c.send_delta(ENDPOINT, nonce=pushed.nonce)
        assert await c.silent(0.3)

    ads(tmp_path, scenario, delta=True)


def test_a_delta_push_removes_a_resource_that_went_away_and_sends_nothing_else(tmp_path: Path) -> None:
    from sofamesh.pilot.policy.resource import Resource

    rule = Resource("networking.istio.io/v1", "DestinationRule", "default", "web",
                    {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})

    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send_delta(CLUSTER)
        cds = await c.recv()
        c.send_delta(CLUSTER, nonce=cds.nonce)
        await pilot.config_store.put(rule)
        added = await c.recv()
        assert [r.name for r in added.resources] == ["outbound|80|v1|web"] and not added.removed_resources
        c.send_delta(CLUSTER, nonce=added.nonce)
        await pilot.config_store.delete(rule.key)
        gone = await c.recv()
        assert list(gone.removed_resources) == ["outbound|80|v1|web"] and not gone.resources
        c.send_delta(CLUSTER, nonce=gone.nonce)
        assert await c.silent(0.3)

    ads(tmp_path, scenario, delta=True)


@pytest.mark.parametrize("delta", [True, False])
def test_a_changed_cluster_gets_its_unchanged_assignment_again_for_envoy_to_finish_warming(
        tmp_path: Path, delta: bool) -> None:
    from sofamesh.pilot.policy.resource import Resource

    rule = Resource("networking.istio.io/v1", "DestinationRule", "default", "web",
                    {"host": "web", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})

    web = ["outbound|80|web"]

    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        def ack(url: str, resp: Any, names: list[str] | None = None) -> None:
            if delta:
                c.send_delta(url, nonce=resp.nonce)
            else:
                c.send(url, names, nonce=resp.nonce, version=resp.version_info)

        c.send_delta(CLUSTER) if delta else c.send(CLUSTER)
        ack(CLUSTER, await c.recv())
        c.send_delta(ENDPOINT, subscribe=web) if delta else c.send(ENDPOINT, web)
        ack(ENDPOINT, await c.recv(), web)
        assert await c.silent(0.3)
        await pilot.config_store.put(rule)
        pushed = await c.recv()
        assert pushed.type_url == CLUSTER
        again = await c.recv()  # the endpoints did not change, yet the cluster's assignment follows
        assert again.type_url == ENDPOINT
        names = [r.name for r in again.resources] if delta else [
            endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name for r in again.resources]
        assert names == web

    ads(tmp_path, scenario, delta=delta)
