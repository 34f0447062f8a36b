"""Nacos 2 gRPC requests on one connection, without sockets: what each request does to the registry
and answers (the real client's side is tests/conformance/test_nacos_grpc.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sofamesh.plugins.registries.nacos import grpc_wire
from sofamesh.plugins.registries.nacos.api import NacosRegistry
from sofamesh.plugins.registries.nacos.grpc_api import NacosGrpcServer

PEER = "ipv4:127.0.0.1:40001"


@pytest.fixture
def server() -> NacosGrpcServer:
    registry = NacosRegistry("nacos", None, address=None)
    grpc = NacosGrpcServer(registry, "127.0.0.1:0")
    registry.mesh.add_listener(grpc._on_change)
    return grpc


def _connect(server: NacosGrpcServer, peer: str = PEER) -> Any:
    kind, out = server.answer(peer, "ServerCheckRequest", b"{}")
    assert kind == "ServerCheckResponse" and out["connectionId"].endswith("_127.0.0.1_" + peer.rsplit(":", 1)[1])
    from sofamesh.plugins.registries.nacos.grpc_api import Connection

    conn = Connection(out["connectionId"], peer, "127.0.0.1")
    server._on_stream_payload(conn, "ConnectionSetupRequest", b'{"clientVersion": "t"}')
    return conn


def _ask(server: NacosGrpcServer, kind: str, peer: str = PEER, **body: Any) -> tuple[str, dict[str, Any]]:
    return server.answer(peer, kind, json.dumps(body).encode())


def _inst(port: int, version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {"ip": "10.0.0.1", "port": port, "metadata": {"version": version}, **extra}


def _ports(server: NacosGrpcServer, name: str) -> list[int]:
    server.registry.mesh.refresh()
    return sorted(i.port for i in server.registry.mesh.instances(name))


def test_register_deregister_and_the_connection_closing(server: NacosGrpcServer) -> None:
    conn = _connect(server)
    kind, out = _ask(server, "InstanceRequest", serviceName="web", type="registerInstance", instance=_inst(80))
    assert (kind, out["resultCode"], out["type"]) == ("InstanceResponse", 200, "registerInstance")
    _ask(server, "InstanceRequest", serviceName="web", type="registerInstance", instance=_inst(81, "v2"))
    assert _ports(server, "web") == [80, 81]
    labels = {i.port: i.labels for i in server.registry.mesh.instances("web")}
    assert labels == {80: {"version": "v1"}, 81: {"version": "v2"}}
    _ask(server, "InstanceRequest", serviceName="web", type="deregisterInstance", instance=_inst(80))
    assert _ports(server, "web") == [81]
    server._close(conn)
    assert _ports(server, "web") == []
    # a request on the closed connection
    kind, out = _ask(server, "HealthCheckRequest")
    assert (kind, out["errorCode"]) == ("ErrorResponse", 301)


def test_batch_replaces_the_connections_instances_of_that_service(server: NacosGrpcServer) -> None:
    _connect(server)
    kind, _ = _ask(
        server,
        "BatchInstanceRequest",
        serviceName="web",
        type="batchRegisterInstance",
        instances=[_inst(80), _inst(81), _inst(82)],
    )
    assert kind == "BatchInstanceResponse" and _ports(server, "web") == [80, 81, 82]
    _ask(server, "BatchInstanceRequest", serviceName="web", type="batchRegisterInstance", instances=[_inst(82)])
    assert _ports(server, "web") == [82]
    kind, out = _ask(server, "BatchInstanceRequest", serviceName="web", type="batchRegisterInstance", instances=3)
    assert (kind, out["errorCode"]) == ("ErrorResponse", 400) and "instances" in out["message"]


def test_a_persistent_instance_outlives_its_connection(server: NacosGrpcServer) -> None:
    conn = _connect(server)
    kind, _ = _ask(
        server,
        "PersistentInstanceRequest",
        serviceName="db",
        type="registerInstance",
        instance=_inst(5432, ephemeral=False),
    )
    assert kind == "InstanceResponse"
    server._close(conn)
    assert _ports(server, "db") == [5432]


def test_query_subscribe_push_and_unsubscribe(server: NacosGrpcServer) -> None:
    conn = _connect(server)
    _ask(
        server,
        "InstanceRequest",
        serviceName="web",
        groupName="G1",
        type="registerInstance",
        instance=_inst(80, clusterName="c1"),
    )
    server.registry.mesh.refresh()
    kind, out = _ask(server, "ServiceQueryRequest", serviceName="web", groupName="G1", cluster="c1")
    info = out["serviceInfo"]
    assert (kind, info["name"], info["groupName"]) == ("QueryServiceResponse", "web", "G1")
    assert [(h["port"], h["clusterName"], h["metadata"]) for h in info["hosts"]] == [(80, "c1", {"version": "v1"})]
    kind, out = _ask(server, "ServiceQueryRequest", serviceName="web", groupName="G1", cluster="c2")
    assert out["serviceInfo"]["hosts"] == []
    kind, out = _ask(server, "SubscribeServiceRequest", serviceName="web", groupName="G1", subscribe=True)
    assert kind == "SubscribeServiceResponse" and len(out["serviceInfo"]["hosts"]) == 1
    while not conn.queue.empty():
        conn.queue.get_nowait()
    _ask(server, "InstanceRequest", serviceName="web", groupName="G1", type="registerInstance", instance=_inst(81))
    server.registry.mesh.refresh()
    assert conn.queue.get_nowait() == b"" and conn.pending  # a push is due
    push = server._notify_payload(conn, *next(iter(conn.pending)))
    ptype, body, _ = grpc_wire.decode(push)
    doc = json.loads(body)
    assert ptype == "NotifySubscriberRequest" and (doc["serviceName"], doc["groupName"]) == ("web", "G1")
    assert sorted(h["port"] for h in doc["serviceInfo"]["hosts"]) == [80, 81]
    conn.pending.clear()
    _ask(server, "SubscribeServiceRequest", serviceName="web", groupName="G1", subscribe=False)
    _ask(server, "InstanceRequest", serviceName="web", groupName="G1", type="deregisterInstance", instance=_inst(81))
    server.registry.mesh.refresh()
    assert conn.queue.empty() and not conn.pending


def test_service_list_and_errors(server: NacosGrpcServer) -> None:
    _connect(server)
    for name in ("a", "b", "c"):
        _ask(server, "InstanceRequest", serviceName=name, type="registerInstance", instance=_inst(80))
    server.registry.mesh.refresh()
    kind, out = _ask(server, "ServiceListRequest", pageNo=2, pageSize=2)
    assert (kind, out["count"], out["serviceNames"]) == ("ServiceListResponse", 3, ["c"])
    assert _ask(server, "Nope")[1]["errorCode"] == 302
    assert server.answer(PEER, "InstanceRequest", b"[1]")[1]["errorCode"] == 502
    kind, out = _ask(
        server, "InstanceRequest", serviceName="x", type="registerInstance", instance=_inst(80, weight="w")
    )
    assert (out["errorCode"], out["message"]) == (400, "Param 'weight' is not a number: 'w'")
    with pytest.raises(grpc_wire.BadPayload):
        grpc_wire.decode(b"\xff\xff")


def test_an_idle_connection_is_detected_and_closed_when_it_does_not_answer(server: NacosGrpcServer) -> None:
    quiet, answering = _connect(server), _connect(server, "ipv4:127.0.0.1:40002")
    _ask(server, "InstanceRequest", serviceName="web", type="registerInstance", instance=_inst(80))
    for conn in (quiet, answering):
        while not conn.queue.empty():
            conn.queue.get_nowait()
    now = quiet.active_at + server.idle_s + 0.1
    assert server.detect(now) == []
    for conn in (quiet, answering):
        kind, body, _ = grpc_wire.decode(conn.queue.get_nowait())
        assert kind == "ClientDetectionRequest" and json.loads(body)["module"] == "internal"
    server._on_stream_payload(answering, "ClientDetectionResponse", b"{}")
    answering.active_at = now + 1  # its answer came in
    assert server.detect(now + 2) == []  # within the 3 s allowed
    assert server.detect(now + 3.5) == [quiet]
    assert quiet.queue.get_nowait() is None  # its stream ends: the connection closes
    assert answering.queue.empty()
    server._close(quiet)
    assert _ports(server, "web") == []
