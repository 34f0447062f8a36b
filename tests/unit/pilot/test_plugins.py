"""Third-party Pilot plugins: a registry-change observer, lifecycle hooks, and a generator of a
protocol's own xDS type URL, all without any change to Pilot."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from xds.type.v3 import typed_struct_pb2

from sofamesh.core.catalog import Catalog, Provenance
from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.app import Pilot, pilot_host
from sofamesh.pilot.config import parse
from sofamesh.pilot.model import MeshModel, Service, ServiceInstance
from sofamesh.pilot.xds.generator import NodeInfo, XdsResource

from .conftest import run

BOLT_ROUTES = "type.googleapis.com/xds.type.v3.TypedStruct"


class BoltRouteGenerator:
    """Routes of every bolt service as a TypedStruct of a type only the sidecar's bolt plugin knows."""

    type_url = BOLT_ROUTES

    def scope(self, node: NodeInfo) -> Hashable:
        return None

    def generate(self, mesh: MeshModel, node: NodeInfo) -> Iterable[XdsResource]:
        for name, svc in mesh.services().items():
            if svc.protocol == "bolt":
                value = struct_pb2.Struct()
                value.update({"service": name, "endpoints": [f"{i.address}:{i.port}" for i in mesh.instances(name)]})
                yield XdsResource(f"bolt|{name}", typed_struct_pb2.TypedStruct(
                    type_url="type.googleapis.com/acme.bolt.v1.RouteConfig", value=value))


class AcmePlugin:
    def __init__(self) -> None:
        self.changes: list[tuple[str, list[str]]] = []
        self.lifecycle: list[str] = []

    @hookimpl
    def pilot_register_xds_generators(self, catalog: Catalog[Any]) -> None:
        catalog.add("acme.bolt-routes", BoltRouteGenerator())

    @hookimpl
    def pilot_instances_changed(self, service: Service, instances: Sequence[ServiceInstance]) -> None:
        self.changes.append((service.name, [i.id for i in instances]))

    @hookimpl
    def pilot_startup(self, pilot: Pilot) -> Any:
        async def started() -> None:
            self.lifecycle.append(f"startup ready={pilot.ready}")

        return started()

    @hookimpl
    def pilot_shutdown(self, pilot: Pilot) -> None:
        self.lifecycle.append("shutdown")


def test_a_plugin_serves_its_own_xds_type_and_observes_changes(tmp_path: Path) -> None:
    plugin = AcmePlugin()
    host = pilot_host()
    host.register(plugin, Provenance("acme", "acme-mesh", "1.0"))
    pilot = Pilot(parse({"xds": {"address": "127.0.0.1:0"}, "api": {"address": "127.0.0.1:0"},
                         "data_dir": str(tmp_path), "debounce": {"quiet_ms": 10, "max_delay_ms": 50}}), host)

    async def scenario() -> Any:
        await pilot.start()
        try:
            await pilot.writable_registry().register(
                Service("com.acme.Echo:1.0", "bolt"),
                ServiceInstance(service="com.acme.Echo:1.0", id="p1", address="127.0.0.1", port=12200), None)
            assert pilot.generator_catalog.provenance("acme.bolt-routes").distribution == "acme-mesh"
            async with grpc.aio.insecure_channel(f"127.0.0.1:{pilot.xds_port}") as ch:
                stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch)
                req = discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="sidecar"), type_url=BOLT_ROUTES)

                async def one() -> Any:
                    yield req

                call = stub.StreamAggregatedResources(one())
                resp = await call.read()
                call.cancel()
                return resp
        finally:
            await pilot.stop()

    resp = run(scenario(), 20)
    assert resp.type_url == BOLT_ROUTES and len(resp.resources) == 1
    ts = typed_struct_pb2.TypedStruct()
    resp.resources[0].Unpack(ts)
    assert ts.type_url.endswith("acme.bolt.v1.RouteConfig")
    assert dict(ts.value)["endpoints"] == ["127.0.0.1:12200"]
    assert plugin.changes == [("com.acme.Echo:1.0", ["p1"])]
    assert plugin.lifecycle == ["startup ready=False", "shutdown"]
