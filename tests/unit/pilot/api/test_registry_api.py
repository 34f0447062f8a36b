"""The Open Service Registry API and the admin endpoints, over a real socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..conftest import run, running_pilot

BODY = {"address": "127.0.0.1", "port": 9001, "protocol": "grpc", "labels": {"zone": "z1"}, "weight": 2}


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with session.request(method, url, **kw) as r:
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body, r.headers


def api(tmp_path: Path, scenario: Any, timeout: float = 20) -> Any:
    """Run ``scenario(session, base_url, pilot)`` against a fresh in-process Pilot."""

    async def main() -> Any:
        async with running_pilot(tmp_path / "data") as pilot, aiohttp.ClientSession() as session:
            return await scenario(session, f"http://127.0.0.1:{pilot.api_port}", pilot)

    return run(main(), timeout)


def test_put_registers_an_instance_that_get_lists(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        status, body, headers = await _call(s, "PUT", f"{base}/v1/services/echo/instances/a", json=BODY)
        assert status == 200 and body["instance"]["origin"] == "embedded"
        assert int(headers["X-Sofamesh-Index"]) == body["index"] > 0
        status, body, _ = await _call(s, "GET", f"{base}/v1/services/echo/instances")
        assert status == 200
        assert [(i["id"], i["port"], i["weight"], i["labels"]) for i in body["instances"]] == [
            ("a", 9001, 2, {"zone": "z1"})
        ]
        assert body["service"] == {
            "name": "echo",
            "protocol": "grpc",
            "ports": [80],
            "metadata": {},
            "instances": 1,
        }
        status, body, _ = await _call(s, "GET", f"{base}/v1/services")
        assert [(x["name"], x["instances"]) for x in body["services"]] == [("echo", 1)]

    api(tmp_path, scenario)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "port": 70000}, "port"),
        ({**BODY, "colour": "red"}, "colour"),
        ({k: v for k, v in BODY.items() if k != "address"}, "address"),
        ({**BODY, "protocol": "soap"}, "protocol"),
        ({**BODY, "ttl_seconds": -3}, "ttl_seconds"),
        ({**BODY, "labels": {"a": 1}}, "labels.a"),
        ({**BODY, "service_ports": [0]}, "service_ports[0]"),
        ([1, 2], "body"),
        ("not json", "body"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(tmp_path: Path, body: Any, field: str) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        kw = {"data": body} if isinstance(body, str) else {"json": body}
        status, resp, _ = await _call(s, "PUT", f"{base}/v1/services/echo/instances/a", **kw)
        assert (status, resp["field"]) == (400, field), resp
        assert resp["error"].startswith(f"{field}: ")

    api(tmp_path, scenario)


def test_unknown_services_and_instances_are_404(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        for method, path in [
            ("GET", "/v1/services/nope/instances"),
            ("DELETE", "/v1/services/nope/instances/a"),
            ("PUT", "/v1/services/nope/instances/a/heartbeat"),
        ]:
            status, body, _ = await _call(s, method, base + path)
            assert (status, body["error"]) == (404, "unknown service 'nope'"), (method, path)
        await _call(s, "PUT", f"{base}/v1/services/echo/instances/a", json=BODY)
        status, body, _ = await _call(s, "DELETE", f"{base}/v1/services/echo/instances/zz")
        assert status == 404 and "no instance 'zz'" in body["error"]

    api(tmp_path, scenario)


def test_delete_and_heartbeat_act_on_the_writable_registry(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        await _call(s, "PUT", f"{base}/v1/services/echo/instances/a", json={**BODY, "ttl_seconds": 30})
        status, body, _ = await _call(s, "PUT", f"{base}/v1/services/echo/instances/a/heartbeat")
        assert (status, body["renewed"]) == (200, "a")
        status, body, _ = await _call(s, "DELETE", f"{base}/v1/services/echo/instances/a")
        assert (status, body["deregistered"]) == (200, "a")
        status, body, _ = await _call(s, "GET", f"{base}/v1/services/echo/instances")
        assert body["instances"] == []

    api(tmp_path, scenario)


def test_a_blocking_watch_returns_when_the_service_changes(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        _, first, _ = await _call(s, "PUT", f"{base}/v1/services/echo/instances/a", json=BODY)
        loop = asyncio.get_running_loop()
        start = loop.time()
        watch = asyncio.ensure_future(
            _call(s, "GET", f"{base}/v1/services/echo/instances?index={first['index']}&wait=10s")
        )
        await asyncio.sleep(0.2)
        assert not watch.done()
        await _call(s, "PUT", f"{base}/v1/services/echo/instances/b", json={**BODY, "port": 9002})
        status, body, headers = await watch
        assert status == 200 and loop.time() - start < 5
        assert [i["id"] for i in body["instances"]] == ["a", "b"]
        assert int(headers["X-Sofamesh-Index"]) > first["index"]
        start = loop.time()
        _, same, _ = await _call(s, "GET", f"{base}/v1/services?index={body['index']}&wait=300ms")
        assert same["index"] == body["index"] and 0.25 < loop.time() - start < 3

    api(tmp_path, scenario)


@pytest.mark.parametrize(("query", "field"), [("index=-1&wait=1s", "index"), ("index=1&wait=soon", "wait")])
def test_a_bad_watch_parameter_is_a_400(tmp_path: Path, query: str, field: str) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        status, body, _ = await _call(s, "GET", f"{base}/v1/services?{query}")
        assert (status, body["field"]) == (400, field)

    api(tmp_path, scenario)


def test_openapi_documents_every_endpoint_and_admin_endpoints_answer(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        _, doc, _ = await _call(s, "GET", f"{base}/openapi.json")
        assert doc["openapi"].startswith("3.")
        assert {(p, m) for p, ops in doc["paths"].items() for m in ops} == {
            ("/v1/services", "get"),
            ("/v1/services/{service}/instances", "get"),
            ("/v1/services/{service}/instances/{id}", "put"),
            ("/v1/services/{service}/instances/{id}", "delete"),
            ("/v1/services/{service}/instances/{id}/heartbeat", "put"),
            ("/apis/{group}/{version}/{plural}", "get"),
            ("/apis/{group}/{version}/namespaces/{namespace}/{plural}", "get"),
            ("/apis/{group}/{version}/namespaces/{namespace}/{plural}", "post"),
            ("/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}", "get"),
            ("/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}", "put"),
            ("/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}", "delete"),
            ("/api/{version}/{plural}", "get"),
            ("/api/{version}/namespaces/{namespace}/{plural}", "get"),
            ("/api/{version}/namespaces/{namespace}/{plural}", "post"),
            ("/api/{version}/namespaces/{namespace}/{plural}/{name}", "get"),
            ("/api/{version}/namespaces/{namespace}/{plural}/{name}", "put"),
            ("/api/{version}/namespaces/{namespace}/{plural}/{name}", "delete"),
            ("/debug/policy/analyze", "get"),
        }
        routes = {(r.method, r.resource.canonical) for r in pilot_app_routes(pilot)}
        for path, ops in doc["paths"].items():
            for method in ops:
                assert (method.upper(), path) in routes
        assert (await _call(s, "GET", f"{base}/ready"))[:2] == (200, "ready\n")
        await _call(s, "PUT", f"{base}/v1/services/echo/instances/a", json=BODY)
        _, metrics, _ = await _call(s, "GET", f"{base}/metrics")
        for name in (
            "pilot_xds_pushes_total",
            "pilot_xds_push_seconds",
            "pilot_xds_nacks_total",
            "pilot_xds_connected_nodes",
            "pilot_xds_response_bytes_total",
        ):
            assert f"# TYPE {name.removesuffix('_total')}" in metrics, name
        assert 'pilot_api_requests_total{code="200",method="PUT"} 1.0' in metrics
        _, reg, _ = await _call(s, "GET", f"{base}/debug/registry")
        assert reg["registries"][0]["name"] == "embedded" and reg["registries"][0]["writable"] is True
        assert [i["id"] for i in reg["model"]["echo"]["instances"]] == ["a"]
        _, sync, _ = await _call(s, "GET", f"{base}/debug/syncz")
        assert (
            sync["nodes"] == [] and "type.googleapis.com/envoy.config.cluster.v3.Cluster" in sync["type_urls"]
        )

    api(tmp_path, scenario)


def pilot_app_routes(pilot: Any) -> list[Any]:
    runner = pilot._runner
    return [r for r in runner.app.router.routes() if r.method != "HEAD"]


def test_a_leased_instance_lives_while_it_heartbeats_and_goes_when_it_stops(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, base: str, pilot: Any) -> None:
        url = f"{base}/v1/services/echo/instances"
        await _call(s, "PUT", f"{url}/keep", json=BODY)
        status, reg, _ = await _call(s, "PUT", f"{url}/lease", json={**BODY, "ttl_seconds": 2.0})
        assert (status, reg["ttl_seconds"]) == (200, 2.0)
        for _ in range(6):  # 3 s of heartbeats, longer than the lease; a 1.5 s margin for a busy machine
            await asyncio.sleep(0.5)
            assert (await _call(s, "PUT", f"{url}/lease/heartbeat"))[0] == 200
        _, listed, _ = await _call(s, "GET", url)
        assert [i["id"] for i in listed["instances"]] == ["keep", "lease"]
        status, watched, _ = await _call(s, "GET", f"{url}?index={listed['index']}&wait=8s")
        assert status == 200 and [i["id"] for i in watched["instances"]] == ["keep"]
        assert (await _call(s, "PUT", f"{url}/lease/heartbeat"))[0] == 404

    api(tmp_path, scenario)


def test_writes_go_to_the_writable_registry_and_reads_merge_every_registry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "mirror.json").write_text(json.dumps({"format": 1, "services": [
        {"name": "echo", "protocol": "grpc", "ports": [80], "metadata": {}}], "instances": [
        {"service": "echo", "id": "m1", "address": "127.0.0.2", "port": 9100, "ttl_seconds": None}]}))

    async def main() -> None:
        registries = [{"name": "mirror", "type": "embedded", "options": {"file": "mirror.json"}},
                      {"name": "main", "type": "embedded", "writable": True}]
        async with running_pilot(data, registries=registries) as pilot, aiohttp.ClientSession() as s:
            base = f"http://127.0.0.1:{pilot.api_port}"
            assert (await _call(s, "PUT", f"{base}/v1/services/echo/instances/a", json=BODY))[0] == 200
            _, body, _ = await _call(s, "GET", f"{base}/v1/services/echo/instances")
            assert [(i["id"], i["origin"]) for i in body["instances"]] == [("a", "main"), ("m1", "mirror")]
            status, _, _ = await _call(s, "DELETE", f"{base}/v1/services/echo/instances/m1")
            assert status == 404  # m1 lives in the read side only; the API writes to "main"
            _, dump, _ = await _call(s, "GET", f"{base}/debug/registry")
            assert [(r["name"], r["writable"]) for r in dump["registries"]] == [("mirror", False), ("main", True)]

    run(main(), 20)
    assert "m1" not in (data / "embedded-registry.json").read_text()
