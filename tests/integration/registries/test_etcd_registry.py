"""The etcd registry against a real etcd: watch, lease liveness, a lost lease put back."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx

from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.plugins.registries.etcd import EtcdRegistry
from tests.integration.registries.servers import EtcdServer, until

SVC = Service(name="com.example.Etcd", protocol="grpc")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_etcd_registry_watches_writes_under_a_lease_and_puts_keys_back_when_the_lease_is_lost(
        etcd: EtcdServer) -> None:
    async def body() -> None:
        http = httpx.AsyncClient(base_url=etcd.endpoint, timeout=5)

        async def get(key: str) -> list[dict[str, str]]:
            resp = await http.post("/v3/kv/range", json={"key": b64(key)})
            return list(resp.json().get("kvs", []))

        reg = EtcdRegistry("etcd", etcd.endpoint, "/t/", lease_ttl_s=3)
        changes: list[str] = []
        await reg.start(lambda names: changes.extend(names))
        try:
            await reg.register(SVC, ServiceInstance(service=SVC.name, id="own", address="127.0.0.1", port=9000,
                                                    weight=4))
            [kv] = await get("/t/com.example.Etcd/own")
            assert int(kv["lease"]) != 0
            assert json.loads(base64.b64decode(kv["value"]))["instance"]["weight"] == 4
            # a key written by someone else is seen through the watch, and so is its deletion
            other = {"service": SVC.to_dict(), "instance": {"service": SVC.name, "id": "ext", "address": "10.0.0.9",
                                                             "port": 9001}}
            await http.post("/v3/kv/put", json={"key": b64("/t/com.example.Etcd/ext"), "value": b64(json.dumps(other))})
            await until(lambda: {i.id for i in reg.instances(SVC.name)} == {"own", "ext"}, what="watched put")
            assert all(i.origin == "etcd" for i in reg.instances(SVC.name))
            await http.post("/v3/kv/deleterange", json={"key": b64("/t/com.example.Etcd/ext")})
            await until(lambda: {i.id for i in reg.instances(SVC.name)} == {"own"}, what="watched delete")
            # the lease is revoked behind our back: the key goes, then comes back under a new lease
            await http.post("/v3/lease/revoke", json={"ID": kv["lease"]})
            await until(lambda: not reg.instances(SVC.name), what="key gone with its lease")
            await until(lambda: [i.id for i in reg.instances(SVC.name)] == ["own"], what="key put back")
            [again] = await get("/t/com.example.Etcd/own")
            assert again["lease"] != kv["lease"]
        finally:
            await reg.stop()
        assert await get("/t/com.example.Etcd/own") == []  # stop revokes our lease
        await http.aclose()

    asyncio.run(asyncio.wait_for(body(), 60))
