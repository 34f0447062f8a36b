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


def test_instance_leases_registrations_outlive_the_pilot_that_took_them_and_any_replica_renews(
        etcd: EtcdServer) -> None:
    async def body() -> None:
        a = EtcdRegistry("etcd", etcd.endpoint, "/r/", lease_ttl_s=3, instance_leases=True)
        b = EtcdRegistry("etcd", etcd.endpoint, "/r/", lease_ttl_s=3, instance_leases=True)
        await a.start(lambda names: None)
        await b.start(lambda names: None)
        b_started = True
        try:
            await a.register(SVC, ServiceInstance(service=SVC.name, id="plain", address="127.0.0.1", port=9000))
            await a.register(SVC, ServiceInstance(service=SVC.name, id="leased", address="127.0.0.1", port=9001),
                             ttl_seconds=2)
            await until(lambda: {i.id for i in b.instances(SVC.name)} == {"plain", "leased"}, what="b sees a's writes")
            # heartbeats through b (not the replica that took the registration) keep the leased one
            for _ in range(8):
                assert await b.heartbeat(SVC.name, "leased")
                await asyncio.sleep(0.5)
            assert {i.id for i in a.instances(SVC.name)} == {"plain", "leased"}
            # a stops (as a replica that goes away): nothing it took goes with it
            await a.stop()
            await asyncio.sleep(1.0)
            assert {i.id for i in b.instances(SVC.name)} == {"plain", "leased"}
            # no more heartbeats: etcd drops the leased instance, once, and only it
            await until(lambda: {i.id for i in b.instances(SVC.name)} == {"plain"}, timeout=10,
                        what="the lease to run out")
            assert not await b.heartbeat(SVC.name, "leased")
            await b.stop()
            b_started = False
            c = EtcdRegistry("etcd", etcd.endpoint, "/r/", instance_leases=True)
            await c.start(lambda names: None)
            assert {i.id for i in c.instances(SVC.name)} == {"plain"}
            await c.stop()
        finally:
            await a.stop()
            if b_started:
                await b.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
