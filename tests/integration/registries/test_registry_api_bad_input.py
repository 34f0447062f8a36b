"""Malformed or incomplete requests to the Eureka, Nacos and Consul APIs: each gets a 4xx naming what
was wrong, and an instance registered before it is still listed and renewable afterwards (the
registry keeps serving everyone else). Each registry listens on a port of its own on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from sofamesh.plugins.registries.consul.api import ConsulRegistry
from sofamesh.plugins.registries.eureka.api import EurekaRegistry
from sofamesh.plugins.registries.nacos.api import NacosRegistry
from sofamesh.plugins.registries.served import ServedRegistry

Body = Callable[[httpx.AsyncClient, ServedRegistry], Awaitable[None]]


def _run(registry: ServedRegistry, body: Body) -> None:
    async def main() -> None:
        await registry.start(registry.mesh.refresh)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{registry.port}", timeout=5) as http:
                await body(http, registry)
        finally:
            await registry.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def _ids(registry: ServedRegistry, service: str) -> set[str]:
    return {i.id for i in registry.instances(service)}


def test_eureka_answers_bad_bodies_unknown_instances_and_bad_statuses_and_keeps_the_others() -> None:
    good = {
        "instance": {
            "instanceId": "w1",
            "hostName": "127.0.0.1",
            "app": "WEB",
            "ipAddr": "127.0.0.1",
            "port": {"$": 8080, "@enabled": "true"},
            "status": "UP",
            "metadata": {"version": "v1"},
            "dataCenterInfo": {"name": "MyOwn"},
            "leaseInfo": {"durationInSecs": 30},
        }
    }

    async def body(http: httpx.AsyncClient, reg: ServedRegistry) -> None:
        assert (await http.post("/eureka/apps/WEB", json=good)).status_code == 204
        bad_json = await http.post(
            "/eureka/apps/WEB", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
        bad_xml = await http.post(
            "/eureka/apps/WEB", content=b"<instance><hostName>", headers={"Content-Type": "application/xml"}
        )
        assert bad_xml.status_code == 400 and "not valid XML" in bad_xml.text
        shape = await http.post("/eureka/apps/WEB", json={"app": "WEB"})
        assert shape.status_code == 400 and "instance" in shape.text
        incomplete = await http.post("/eureka/apps/WEB", json={"instance": {"instanceId": "w3", "app": "WEB"}})
        assert incomplete.status_code == 400 and "instance.hostName: is required" in incomplete.text
        no_port = await http.post(
            "/eureka/apps/WEB", json={"instance": {**good["instance"], "instanceId": "w2", "port": {"$": "x"}}}
        )
        assert no_port.status_code == 400
        # renewing or cancelling an instance Eureka does not know: 404, so the client registers again
        assert (await http.put("/eureka/apps/WEB/nope")).status_code == 404
        assert (await http.delete("/eureka/apps/WEB/nope")).status_code == 404
        status = await http.put("/eureka/apps/WEB/w1/status", params={"value": "SLEEPING"})
        assert status.status_code == 400 and "SLEEPING" in status.text
        # the good one is untouched and still renews
        assert _ids(reg, "web") == {"w1"}
        assert (await http.put("/eureka/apps/WEB/w1")).status_code == 200
        listed = await http.get("/eureka/apps/WEB", headers={"Accept": "application/json"})
        assert [i["instanceId"] for i in listed.json()["application"]["instance"]] == ["w1"]

    _run(EurekaRegistry("eureka", None, prefix="/eureka", address="127.0.0.1:0"), body)


def test_nacos_answers_missing_fields_bad_beats_and_unknown_instances_and_keeps_the_others() -> None:
    base = "/nacos/v1/ns"

    async def body(http: httpx.AsyncClient, reg: ServedRegistry) -> None:
        ok = await http.post(f"{base}/instance", params={"serviceName": "web", "ip": "127.0.0.1", "port": "8080"})
        assert ok.status_code == 200 and ok.text == "ok"
        no_name = await http.post(f"{base}/instance", params={"ip": "127.0.0.1", "port": "8081"})
        assert no_name.status_code == 400 and no_name.text.startswith("caused: ") and "serviceName" in no_name.text
        bad_port = await http.post(
            f"{base}/instance", params={"serviceName": "web", "ip": "127.0.0.1", "port": "eighty"}
        )
        assert bad_port.status_code == 400 and "port" in bad_port.text
        bad_beat = await http.put(f"{base}/instance/beat", params={"serviceName": "web", "beat": "{oops"})
        assert bad_beat.status_code == 400 and "beat is not valid JSON" in bad_beat.text
        # a beat without the instance's body for one Nacos does not know: code 20404 (register again)
        unknown = await http.put(f"{base}/instance/beat", params={"serviceName": "web", "ip": "127.0.0.9", "port": "9"})
        assert unknown.status_code == 200 and unknown.json()["code"] == 20404
        missing = await http.get(f"{base}/instance", params={"serviceName": "web", "ip": "127.0.0.9", "port": "9"})
        assert missing.status_code == 404 and "no ips found" in missing.text
        assert len(reg.instances("web")) == 1
        listed = await http.get(f"{base}/instance/list", params={"serviceName": "web"})
        assert [(h["ip"], h["port"]) for h in listed.json()["hosts"]] == [("127.0.0.1", 8080)]

    _run(NacosRegistry("nacos", None, address="127.0.0.1:0"), body)


def test_consul_answers_bad_definitions_ttls_and_unknown_ids_and_keeps_the_others() -> None:
    async def body(http: httpx.AsyncClient, reg: ServedRegistry) -> None:
        good = {"Name": "web", "ID": "w1", "Port": 8080, "Check": {"TTL": "30s"}}
        assert (await http.put("/v1/agent/service/register", json=good)).status_code == 200
        not_json = await http.put("/v1/agent/service/register", content=b"{nope")
        assert not_json.status_code == 400 and "Request decode failed" in not_json.text
        not_object = await http.put("/v1/agent/service/register", json=["web"])
        assert not_object.status_code == 400 and "JSON object" in not_object.text
        no_name = await http.put("/v1/agent/service/register", json={"Port": 1})
        assert no_name.status_code == 400 and "Missing service name" in no_name.text
        bad_ttl = await http.put(
            "/v1/agent/service/register", json={"Name": "web", "ID": "w2", "Port": 8081, "Check": {"TTL": "soon"}}
        )
        assert bad_ttl.status_code == 400 and "Check.TTL" in bad_ttl.text and "'soon'" in bad_ttl.text
        gone = await http.put("/v1/agent/service/deregister/nope")
        assert gone.status_code == 404 and 'Unknown service ID "nope"' in gone.text
        check = await http.put("/v1/agent/check/pass/service:nope")
        assert check.status_code == 404 and "service:nope" in check.text
        update = await http.put("/v1/agent/check/update/service:w1", json={"Status": "sleepy"})
        assert update.status_code == 400 and "sleepy" in update.text
        blocking = await http.get("/v1/health/service/web", params={"index": "x"})
        assert (blocking.status_code, blocking.text) == (400, "Invalid index")
        assert _ids(reg, "web") == {"w1"}
        assert (await http.put("/v1/agent/check/pass/service:w1")).status_code == 200
        rows = (await http.get("/v1/health/service/web", params={"passing": "1"})).json()
        assert [r["Service"]["ID"] for r in rows] == ["w1"]

    _run(ConsulRegistry("consul", None, address="127.0.0.1:0"), body)
