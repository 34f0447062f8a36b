"""The zookeeper registry against a real ZooKeeper: reads what Java/Node clients write, writes what
they read, survives a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kazoo.client import KazooClient

from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.zookeeper import ZookeeperRegistry
from sofamesh.plugins.registries.zookeeper.urls import java_encode
from tests.integration.registries.servers import ZooKeeperServer, until

IFACE = "org.apache.dubbo.demo.DemoService"
JAVA_URL = (f"dubbo://127.0.0.1:20880/{IFACE}?anyhost=true&application=demo-provider&deprecated=false&dubbo=2.0.2"
            f"&dynamic=true&generic=false&group=g1&interface={IFACE}&methods=sayHello,sayHelloAsync&pid=1234"
            "&release=3.2.0&side=provider&timestamp=1700000000000&version=1.0.0&weight=60")


def kazoo(zk: ZooKeeperServer) -> KazooClient:
    client = KazooClient(hosts=zk.hosts, timeout=5.0)
    client.start(timeout=10)
    return client


def run(coro: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout))


def test_a_dubbo_provider_node_written_like_java_is_read_with_its_fields(zookeeper: ZooKeeperServer) -> None:
    writer = kazoo(zookeeper)
    writer.create(f"/dubbo/{IFACE}/providers/{java_encode(JAVA_URL)}", b"10.0.0.5", ephemeral=True, makepath=True)

    async def body() -> None:
        reg = ZookeeperRegistry("zk", zookeeper.hosts, "dubbo")
        changes: list[set[str]] = []
        await reg.start(lambda names: changes.append(set(names)))
        try:
            [inst] = reg.instances(IFACE)
            assert (inst.address, inst.port, inst.version, inst.group, inst.weight) == (
                "127.0.0.1", 20880, "1.0.0", "g1", 60)
            assert inst.labels["methods"] == "sayHello,sayHelloAsync"
            assert inst.origin == "zk" and inst.health is Health.HEALTHY
            assert reg.services()[IFACE].protocol == "dubbo"
            # a disabled provider (enabled=false) appears, then the provider goes away
            disabled = JAVA_URL.replace("20880", "20881") + "&enabled=false"
            await asyncio.to_thread(writer.create, f"/dubbo/{IFACE}/providers/{java_encode(disabled)}", b"",
                                    ephemeral=True)
            await until(lambda: len(reg.instances(IFACE)) == 2, what="second provider")
            assert {i.port: i.health for i in reg.instances(IFACE)} == {20880: Health.HEALTHY,
                                                                         20881: Health.UNHEALTHY}
            await asyncio.to_thread(writer.stop)
            await until(lambda: not reg.instances(IFACE), what="providers gone with their session")
            assert IFACE not in reg.services() and IFACE in set().union(*changes)
        finally:
            await reg.stop()
            writer.close()

    run(body)


def test_an_instance_written_in_the_dubbo_layout_is_an_ephemeral_node_named_like_java_names_it(
        zookeeper: ZooKeeperServer) -> None:
    reader = kazoo(zookeeper)

    async def body() -> None:
        reg = ZookeeperRegistry("zk", zookeeper.hosts, "dubbo")
        await reg.start(lambda names: None)
        try:
            svc = Service(name="com.example.Echo", protocol="dubbo", ports=(20880,))
            await reg.register(svc, ServiceInstance(service=svc.name, id="echo-1", address="127.0.0.1", port=20990,
                                                    weight=7, version="1.0.0", labels={"methods": "echo,ping"}))
            [child] = reader.get_children("/dubbo/com.example.Echo/providers")
            assert child.startswith("dubbo%3A%2F%2F127.0.0.1%3A20990%2Fcom.example.Echo%3F")
            assert "methods%3Decho%2Cping" in child and "weight%3D7" in child and "%26version%3D1.0.0" in child
            _data, stat = reader.get(f"/dubbo/com.example.Echo/providers/{child}")
            assert stat.ephemeralOwner != 0
            await until(lambda: [i.id for i in reg.instances(svc.name)] == ["echo-1"], what="read back")
            [back] = reg.instances(svc.name)
            assert (back.port, back.weight, back.version) == (20990, 7, "1.0.0")
            assert await reg.deregister(svc.name, "echo-1")
            assert reader.get_children("/dubbo/com.example.Echo/providers") == []
        finally:
            await reg.stop()
            reader.stop()
            reader.close()

    run(body)


def test_a_sofa_rpc_layout_node_is_read_with_unique_id_and_online_flag(zookeeper: ZooKeeperServer) -> None:
    writer = kazoo(zookeeper)
    url = ("bolt://127.0.0.1:12200?startTime=1&pid=2&uniqueId=u1&version=1.0&timeout=3000&dynamic=true&weight=30"
           "&accepts=100000&language=java&rpcVer=50400&interface=com.example.Sofa&appName=app")
    writer.create(f"/sofa-rpc/com.example.Sofa/providers/{java_encode(url)}", b"\x00", makepath=True)

    async def body() -> None:
        reg = ZookeeperRegistry("zks", zookeeper.hosts, "sofa")
        await reg.start(lambda names: None)
        try:
            # SOFA's unique service name (interface:version:uniqueId) is what Bolt requests route on
            assert list(reg.services()) == ["com.example.Sofa:1.0:u1"]
            [inst] = reg.instances("com.example.Sofa:1.0:u1")
            assert (inst.group, inst.version, inst.weight, inst.health) == ("u1", "1.0", 30, Health.UNHEALTHY)
            assert reg.services()["com.example.Sofa:1.0:u1"].protocol == "bolt"
        finally:
            await reg.stop()
            writer.stop()
            writer.close()

    run(body)


def test_after_a_zookeeper_restart_and_session_loss_our_nodes_are_back_and_watches_still_fire(
        zookeeper: ZooKeeperServer) -> None:
    async def body() -> None:
        reg = ZookeeperRegistry("zk", zookeeper.hosts, "dubbo", session_timeout_s=2.0)
        await reg.start(lambda names: None)
        try:
            svc = Service(name="com.example.Echo", protocol="dubbo")
            await reg.register(svc, ServiceInstance(service=svc.name, id="a", address="127.0.0.1", port=20001))
            await until(lambda: len(reg.instances(svc.name)) == 1, what="own instance")
            await asyncio.to_thread(zookeeper.stop)
            await until(lambda: reg.stale, what="stale")
            await asyncio.sleep(3.0)  # longer than the session timeout: the session is lost
            assert [i.id for i in reg.instances(svc.name)] == ["a"]  # kept during the outage
            await asyncio.to_thread(zookeeper.start)
            await until(lambda: not reg.stale, timeout=30, what="reconnected")
            other = kazoo(zookeeper)
            try:
                await until(lambda: len(other.get_children("/dubbo/com.example.Echo/providers")) == 1,
                            timeout=20, what="our node re-created")
                await asyncio.sleep(3.0)  # the old session's expiry must not take the node away
                [child] = other.get_children("/dubbo/com.example.Echo/providers")
                _d, stat = other.get(f"/dubbo/com.example.Echo/providers/{child}")
                assert stat.ephemeralOwner == reg._zk.client_id[0]  # type: ignore[union-attr]
                url = JAVA_URL.replace(IFACE, "com.example.Echo")
                other.create(f"/dubbo/com.example.Echo/providers/{java_encode(url)}", b"", ephemeral=True)
                await until(lambda: len(reg.instances(svc.name)) == 2, what="watch re-armed")
            finally:
                other.stop()
                other.close()
        finally:
            await reg.stop()

    run(body, 90)


def test_dubbo_configurator_overrides_change_weight_and_disable_a_provider_until_removed(
        zookeeper: ZooKeeperServer) -> None:
    writer = kazoo(zookeeper)
    writer.create(f"/dubbo/{IFACE}/providers/{java_encode(JAVA_URL)}", b"", ephemeral=True, makepath=True)
    other = JAVA_URL.replace("127.0.0.1:20880", "127.0.0.2:20880")
    writer.create(f"/dubbo/{IFACE}/providers/{java_encode(other)}", b"", ephemeral=True)

    async def body() -> None:
        reg = ZookeeperRegistry("zk", zookeeper.hosts, "dubbo")
        await reg.start(lambda names: None)

        def state() -> dict[str, tuple[int, Health]]:
            return {i.address: (i.weight, i.health) for i in reg.instances(IFACE)}

        try:
            assert state() == {"127.0.0.1": (60, Health.HEALTHY), "127.0.0.2": (60, Health.HEALTHY)}
            everyone = f"override://0.0.0.0/{IFACE}?category=configurators&dynamic=false&enabled=true&weight=20"
            one = f"override://127.0.0.2:20880/{IFACE}?category=configurators&disabled=true&dynamic=false"
            for url in (everyone, one):
                await asyncio.to_thread(writer.create, f"/dubbo/{IFACE}/configurators/{java_encode(url)}", b"",
                                        makepath=True)
            await until(lambda: state() == {"127.0.0.1": (20, Health.HEALTHY), "127.0.0.2": (20, Health.UNHEALTHY)},
                        what="overrides applied")
            await asyncio.to_thread(writer.delete, f"/dubbo/{IFACE}/configurators/{java_encode(one)}")
            await until(lambda: state()["127.0.0.2"] == (20, Health.HEALTHY), what="override removed")
        finally:
            await reg.stop()
            writer.stop()
            writer.close()

    run(body)


def test_persistent_registrations_outlive_the_pilot_and_one_elected_replica_reaps_leases(
        zookeeper: ZooKeeperServer) -> None:
    svc = Service(name=IFACE, protocol="dubbo")

    async def body() -> None:
        a = ZookeeperRegistry("zk", zookeeper.hosts, "dubbo", persistent=True, session_timeout_s=4)
        b = ZookeeperRegistry("zk", zookeeper.hosts, "dubbo", persistent=True, session_timeout_s=4)
        await a.start(lambda names: None)
        await b.start(lambda names: None)
        b_running = True
        try:
            await until(lambda: a.leases is not None and b.leases is not None
                        and [a.leases.leader, b.leases.leader].count(True) == 1, what="one elected reaper")
            await a.register(svc, ServiceInstance(service=IFACE, id="plain", address="127.0.0.1", port=20880))
            await a.register(svc, ServiceInstance(service=IFACE, id="leased", address="127.0.0.1", port=20881),
                             ttl_seconds=2)
            await until(lambda: {i.id for i in b.instances(IFACE)} == {"plain", "leased"}, what="b sees a's writes")
            for _ in range(8):  # heartbeats through b keep the lease a granted
                assert await b.heartbeat(IFACE, "leased")
                await asyncio.sleep(0.5)
            assert {i.id for i in a.instances(IFACE)} == {"plain", "leased"}
            await a.stop()  # its session goes: nothing it registered goes with it
            await until(lambda: b.leases is not None and b.leases.leader, timeout=15, what="b elected")
            assert {i.id for i in b.instances(IFACE)} == {"plain", "leased"}
            await until(lambda: {i.id for i in b.instances(IFACE)} == {"plain"}, timeout=10,
                        what="the leased instance reaped")
            assert b.leases is not None and b.leases.reaped == 1
            assert not await b.heartbeat(IFACE, "leased")
            await b.stop()
            b_running = False
            c = ZookeeperRegistry("zk", zookeeper.hosts, "dubbo", persistent=True)
            await c.start(lambda names: None)
            assert {i.id for i in c.instances(IFACE)} == {"plain"}
            await c.stop()
        finally:
            await a.stop()
            if b_running:
                await b.stop()

    run(body)
