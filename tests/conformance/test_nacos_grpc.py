"""A real Nacos 2 client, PyPI nacos-sdk-python 3.2 (gRPC only), against Pilot's ``nacos`` registry,
which serves Nacos's gRPC protocol on the HTTP port + 1000 (sofamesh/plugins/registries/nacos/
grpc_api.py). Two instances (metadata version v1 / v2) register over gRPC, are discovered with their
metadata, reached through a sofamesh sidecar, and a subscription sees one deregister; the other
leaves with its connection. A service registered through the Open Service Registry API is
discovered by the gRPC client. Malformed payloads get Nacos's ErrorResponse codes and the server
goes on serving. No Nacos server can run here (docs/registries.md): the client is real, the
server is Pilot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from sofamesh.plugins.registries.nacos import grpc_wire as wire
from sofamesh.testing import UpstreamServer, free_port
from tests.conformance.registry_api_peers import (
    Client,
    metadata_versions,
    nacos_ports,
    reach_through_sidecar,
    require_clients,
)
from tests.integration.registries.servers import PilotWithConfig
from tests.integration.xds.mesh import wait_for


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.http_port, self.grpc_port = nacos_ports()
        self.pilot = PilotWithConfig(
            tmp / "pilot",
            [
                {"name": "embedded"},
                # idle 2 s: a ClientDetectionRequest before the clients' own 5 s health checks
                {"name": "nacos", "options": {"address": f"127.0.0.1:{self.http_port}", "grpc_idle_s": 2}},
            ],
        )
        self.pilot.start()
        self.server = f"127.0.0.1:{self.http_port}"
        self.tmp = tmp

    def instances(self, service: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.pilot.api_url}/v1/services/{service}/instances", timeout=5)
        return list(resp.json()["instances"]) if resp.status_code == 200 else []

    def versions(self, service: str) -> set[str]:
        return {i["labels"].get("version", "") for i in self.instances(service) if i["health"] == "healthy"}

    def grpc(self) -> dict[str, Any]:
        doc = self.pilot.get("/debug/registry")
        return dict(next(r for r in doc["registries"] if r["name"] == "nacos")["grpc"])

    def client(self, name: str, port: int, version: str, log: str) -> Client:
        return Client.nacos_grpc(self.server, name, port, version, self.tmp / log)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    require_clients(nacos_grpc=True, others=False)
    m = Mesh(tmp_path)
    yield m
    m.pilot.stop()  # pytest runs this after a failed test too


def test_nacos_sdk_python_registers_discovers_subscribes_and_leaves_with_its_connection(mesh: Mesh) -> None:
    with UpstreamServer("ng-v1") as up1, UpstreamServer("ng-v2") as up2:
        p1, p2 = (int(u.address.rsplit(":", 1)[1]) for u in (up1, up2))
        c1 = mesh.client("hello-grpc", p1, "v1", "ng1.log")
        c2 = mesh.client("hello-grpc", p2, "v2", "ng2.log")
        watcher = mesh.client("hello-grpc", 0, "", "watcher.log")
        try:
            wait_for(lambda: mesh.versions("hello-grpc") == {"v1", "v2"}, 10, "both in the model")
            labels = {i["labels"]["version"]: i for i in mesh.instances("hello-grpc")}
            assert (labels["v1"]["address"], labels["v1"]["port"]) == ("127.0.0.1", p1)
            found = watcher.ask(cmd="discover", name="hello-grpc")["instances"]
            assert {(r["port"], r["healthy"]) for r in found} == {(p1, True), (p2, True)}
            assert metadata_versions(found) == {"v1", "v2"}
            # the v1 HTTP API lists them too
            v1_view = httpx.get(
                f"http://{mesh.server}/nacos/v1/ns/instance/list", params={"serviceName": "hello-grpc"}, timeout=5
            ).json()
            assert {h["metadata"]["version"] for h in v1_view["hosts"]} == {"v1", "v2"}
            grpc_view = mesh.pilot.get("/debug/registry")
            nacos = next(r for r in grpc_view["registries"] if r["name"] == "nacos")
            assert nacos["grpc"]["port"] == mesh.grpc_port and nacos["grpc"]["connections"] >= 3
            # idle connections are probed; the clients answer, and keep their instances
            wait_for(lambda: mesh.grpc()["acks"] >= 3, 15, "ClientDetectionResponses")
            assert mesh.versions("hello-grpc") == {"v1", "v2"} and mesh.grpc()["connections"] >= 3
            reach_through_sidecar(mesh.pilot.xds_port, "hello-grpc", {"ng-v1", "ng-v2"})

            watcher.ask(cmd="subscribe", name="hello-grpc")
            c1.close()  # deregisters over gRPC, then shuts down
            wait_for(lambda: mesh.versions("hello-grpc") == {"v2"}, 10, "the deregistered one gone")
            watcher.wait_for(
                lambda e: e["event"] == "changed" and metadata_versions(e["instances"]) == {"v2"},
                10,
                "the subscription's callback without v1",
            )
            c2.send(cmd="close")  # the client shuts down without deregistering: its connection ends
            wait_for(lambda: not mesh.instances("hello-grpc"), 10, "the closed connection's instance gone")
            # (the client keeps its last list when a push is empty: update_cache_when_empty is off by default)
        finally:
            for c in (c1, c2, watcher):
                c.close()


def test_a_killed_client_leaves_and_the_open_service_registry_api_is_discovered(mesh: Mesh) -> None:
    with UpstreamServer("osr") as up:
        host, port = up.address.rsplit(":", 1)
        resp = httpx.put(
            f"{mesh.pilot.api_url}/v1/services/from-osr/instances/osr-1",
            json={"address": host, "port": int(port), "labels": {"version": "v3"}},
            timeout=5,
        )
        assert resp.status_code == 200, resp.text
        c = mesh.client("killed-grpc", free_port(), "v1", "k.log")
        try:
            wait_for(lambda: mesh.versions("killed-grpc") == {"v1"}, 10, "registered")
            rows = c.ask(cmd="discover", name="from-osr")["instances"]
            assert [(r["ip"], r["port"], r["metadata"].get("version")) for r in rows] == [(host, int(port), "v3")]
            assert "from-osr" in c.ask(cmd="services")["names"]
            c.die()  # the process exits: the kernel closes the connection
            wait_for(lambda: not mesh.instances("killed-grpc"), 10, "the dead client's instance gone")
        finally:
            c.close()


def _call(port: int, kind: str, body: bytes) -> tuple[str, dict[str, Any]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{wire.REQUEST_SERVICE}/{wire.REQUEST_METHOD}")
        msg = wire.Payload()
        msg.metadata.type = kind
        msg.body.value = body
        raw = call(msg.SerializeToString(), timeout=5)
    rtype, out, _ = wire.decode(raw)
    return rtype, json.loads(out)


def test_malformed_payloads_get_nacos_error_responses_and_the_server_goes_on(mesh: Mesh) -> None:
    port = mesh.grpc_port
    rtype, out = _call(port, "NoSuchRequest", b"{}")
    assert (rtype, out["resultCode"], out["errorCode"], out["message"]) == (
        "ErrorResponse",
        500,
        302,
        "RequestHandler Not Found",
    )
    # a known type on a connection that never set up its stream
    rtype, out = _call(port, "InstanceRequest", b"{}")
    assert (rtype, out["errorCode"], out["message"]) == ("ErrorResponse", 301, "Connection is unregistered.")
    # bytes that are no Payload: status INTERNAL, as gRPC-Java answers
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{wire.REQUEST_SERVICE}/{wire.REQUEST_METHOD}")
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff\xff", timeout=5)
        assert err.value.code() is grpc.StatusCode.INTERNAL
    rtype, out = _call(port, "ServerCheckRequest", b"{}")
    assert rtype == "ServerCheckResponse" and out["connectionId"]
    # a set-up connection: bad JSON is 502, a missing field 400 naming it
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(f"/{wire.REQUEST_SERVICE}/{wire.REQUEST_METHOD}")
        assert wire.decode(unary(wire.encode("ServerCheckRequest", {}), timeout=5))[0] == "ServerCheckResponse"
        stream = channel.stream_stream(f"/{wire.BI_STREAM_SERVICE}/{wire.BI_STREAM_METHOD}")
        import queue

        outgoing: queue.Queue[bytes | None] = queue.Queue()
        outgoing.put(wire.encode("ConnectionSetupRequest", {"clientVersion": "test", "labels": {}}))
        outgoing.put(b"\x0a\x03bad")  # garbage on the stream is dropped, the stream goes on
        responses = stream(iter(outgoing.get, None))

        def ask(kind: str, body: bytes) -> dict[str, Any]:
            rtype, out, _ = wire.decode(
                unary(wire.Payload(metadata={"type": kind}, body={"value": body}).SerializeToString(), timeout=5)
            )
            return {**json.loads(out), "payload": rtype}

        wait_for(lambda: ask("HealthCheckRequest", b"{}")["payload"] == "HealthCheckResponse", 5, "stream set up")
        out = ask("InstanceRequest", b"{not json")
        assert (out["payload"], out["errorCode"]) == ("ErrorResponse", 502) and out["message"]
        out = ask(
            "InstanceRequest",
            json.dumps({"serviceName": "bad", "type": "registerInstance", "instance": {"port": 80}}).encode(),
        )
        assert (out["payload"], out["errorCode"], out["message"]) == ("ErrorResponse", 400, "Param 'ip' is required.")
        out = ask(
            "InstanceRequest",
            json.dumps({"serviceName": "bad", "type": "upsert", "instance": {"ip": "127.0.0.1", "port": 80}}).encode(),
        )
        assert (out["payload"], out["errorCode"]) == ("ErrorResponse", 400) and "upsert" in out["message"]
        out = ask(
            "InstanceRequest",
            json.dumps({"type": "registerInstance", "instance": {"ip": "127.0.0.1", "port": 80}}).encode(),
        )
        assert (out["errorCode"], out["message"]) == (400, "Param 'serviceName' is required.")
        out = ask(
            "InstanceRequest",
            json.dumps(
                {
                    "serviceName": "fine",
                    "type": "registerInstance",
                    "instance": {"ip": "127.0.0.1", "port": 81, "metadata": {"version": "v9"}},
                }
            ).encode(),
        )
        assert (out["payload"], out["resultCode"]) == ("InstanceResponse", 200)
        wait_for(lambda: mesh.versions("fine") == {"v9"}, 10, "the good registration in the model")
        outgoing.put(None)
        responses.cancel()
    wait_for(lambda: not mesh.instances("fine"), 10, "gone with its connection")
    assert _call(port, "ServerCheckRequest", b"{}")[0] == "ServerCheckResponse"  # still serving
    assert httpx.get(f"{mesh.pilot.api_url}/ready", timeout=5).status_code == 200
