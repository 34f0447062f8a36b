"""Served registrations shared by two replicas (two ``ServedRegistry`` objects, each with its own store
client) over a real etcd and a real ZooKeeper: a heartbeat storm through replica A is written to the
store a few times, not once per renewal, replica B never sees the instance lapse while it is being
renewed, and once the renewals stop B sees it unhealthy, then removed, neither early nor later than
the renewal granularity allows; a deregistration through B removes it from A."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.served import Entry, ServedRegistry
from tests.integration.registries.servers import etcd, zookeeper

__all__ = ["etcd", "zookeeper"]
LEASE_S, REMOVE_S, FRACTION = 2.0, 4.0, 0.5
STEP_S = FRACTION * LEASE_S  # the renewal granularity: at most one written renewal per second
STORM_S, BEATS_PER_S = 4.5, 200  # the last renewal half a step after the last written one


def _entry() -> Entry:
    inst = ServiceInstance(id="n1", service="storm", address="127.0.0.1", port=8080, origin="nacos")
    return Entry(Service("storm"), inst, lease_s=LEASE_S, remove_after_s=REMOVE_S, wire={"ip": "127.0.0.1"})


def _health(reg: ServedRegistry) -> Health | None:
    found = [i.health for i in reg.instances("storm")]
    return found[0] if found else None


async def _replicas(shared: dict[str, Any]) -> tuple[ServedRegistry, ServedRegistry]:
    a, b = ServedRegistry("nacos", None), ServedRegistry("nacos", None)
    for reg in (a, b):
        reg.share({**shared, "renew_write_fraction": FRACTION})
        await reg.start(lambda names: None)
    return a, b


async def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", ["etcd", "zookeeper"])
def test_a_heartbeat_storm_writes_a_few_times_and_a_lapse_is_seen_on_time_by_the_other_replica(
    kind: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(kind)
    shared = (
        {"type": "etcd", "endpoint": server.endpoint, "prefix": "/storm/"}
        if kind == "etcd"
        else {"type": "zookeeper", "hosts": server.hosts, "root": "/storm"}
    )

    async def body() -> None:
        a, b = await _replicas(shared)
        try:
            assert a.shared is not None and b.shared is not None
            a.put(_entry())
            await _wait(lambda: _health(b) is Health.HEALTHY, 5, "the registration on B")
            # the storm: 200 renewals a second through A for 4.5 s (Nacos clients beating far too often);
            # B is watched all along and must never see the instance lapse
            renewals, start = 0, time.monotonic()
            seen_on_b: set[Health | None] = set()
            while time.monotonic() - start < STORM_S:
                assert a.renew("storm", "n1") is not None
                renewals += 1
                seen_on_b.add(_health(b))
                await asyncio.sleep(1 / BEATS_PER_S)
            last = time.monotonic()
            assert renewals >= 200
            assert seen_on_b == {Health.HEALTHY}, seen_on_b
            # one write for the registration, then at most one per granularity step (+1 for a step cut short)
            await _wait(lambda: a.shared is not None and a.shared._queue.empty(), 5, "A's writes done")
            assert a.shared.writes <= 1 + STORM_S / STEP_S + 1, a.shared.describe()
            assert a.shared.writes >= 1 + STORM_S / STEP_S - 1, a.shared.describe()  # renewals do get written
            assert a.shared.renewals_unwritten >= renewals - a.shared.writes
            assert b.shared.writes == 0
            # the renewals stop: A (which took them) and B both see the lapse, B at most one step late
            unhealthy: dict[str, float] = {}
            removed: dict[str, float] = {}
            deadline = last + REMOVE_S + STEP_S + 6
            while len(removed) < 2 and time.monotonic() < deadline:
                now = time.monotonic() - last
                for name, reg in (("a", a), ("b", b)):
                    health = _health(reg)
                    if health is not Health.HEALTHY and name not in unhealthy:
                        unhealthy[name] = now
                    if health is None and name not in removed:
                        removed[name] = now
                await asyncio.sleep(0.02)
            assert set(removed) == {"a", "b"}, (unhealthy, removed)
            # A knows its last renewal exactly; B knows it only to the granularity step
            assert LEASE_S - 0.05 <= unhealthy["a"] <= LEASE_S + 1.0, unhealthy
            assert LEASE_S - 0.05 <= unhealthy["b"] <= LEASE_S + STEP_S + 1.0, unhealthy
            assert REMOVE_S - 0.05 <= removed["b"] <= REMOVE_S + STEP_S + 3.0, removed
            # and the store removed it (B did not just drop it on its own): a new B reads nothing
            c = ServedRegistry("nacos", None)
            c.share({**shared})
            await c.start(lambda names: None)
            try:
                await _wait(lambda: _health(c) is None, 5, "the store removed the lapsed registration")
            finally:
                await c.stop()
            # a registration through A deregistered through B is gone from A
            a.put(_entry())
            await _wait(lambda: _health(b) is Health.HEALTHY, 5, "the new registration on B")
            assert b.remove("storm", "n1") is not None
            await _wait(lambda: _health(a) is None, 5, "the deregistration through B on A")
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(body())
