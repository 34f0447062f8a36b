from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import SOURCE_LABEL, MeshModel, Service, ServiceInstance
from sofamesh.pilot.sync import SYNC_LABEL, Pair, RegistrySync, sources_by_target
from sofamesh.plugins.registries.embedded import EmbeddedRegistry

SVC = Service(name="svc", protocol="bolt")


def inst(i: str, port: int, weight: int = 1) -> ServiceInstance:
    return ServiceInstance(service="svc", id=i, address="127.0.0.1", port=port, weight=weight)


def view(reg: EmbeddedRegistry) -> dict[str, tuple[int, int, str]]:
    return {i.id: (i.port, i.weight, i.labels.get(SOURCE_LABEL, reg.name)) for i in reg.instances("svc")}


def test_a_chain_of_two_way_pairs_reaches_every_registry_in_registry_order() -> None:
    plan = sources_by_target(["a", "b", "c"], [Pair("a", "b", True), Pair("b", "c", True)])
    assert plan == {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}
    assert sources_by_target(["a", "b", "c"], [Pair("a", "b"), Pair("b", "c")]) == {"b": ["a"], "c": ["a", "b"]}
    with pytest.raises(ConfigError):
        sources_by_target(["a"], [Pair("a", "zz")])


def test_sync_copies_natives_only_follows_updates_and_deletes_and_never_loops(tmp_path: Path) -> None:
    async def body() -> None:
        a, b, c = (EmbeddedRegistry(n, tmp_path / f"{n}.json") for n in "abc")
        sync = RegistrySync([a, b, c], [Pair("a", "b", True), Pair("b", "c", True)])
        for reg in (a, b, c):
            await reg.start(lambda names: None)
        await a.register(SVC, inst("a1", 1, 3))
        await c.register(SVC, inst("c1", 3))
        await sync.reconcile(["svc"])
        expected = {"a1": (1, 3, "a"), "c1": (3, 1, "c")}
        assert view(a) == view(b) == view(c) == expected
        written = sync.status.targets["b"].written
        await sync.reconcile(["svc"])  # converged: a second pass writes nothing
        assert sync.status.targets["b"].written == written
        await a.register(SVC, inst("a1", 1, 9))  # update at the source
        await sync.reconcile(["svc"])
        assert view(c)["a1"] == (1, 9, "a")
        tampered = ServiceInstance(service="svc", id="c1", address="127.0.0.1", port=3, weight=50,
                                   labels={SOURCE_LABEL: "c"})
        await b.register(SVC, tampered)  # a copy changed elsewhere: its source wins
        await sync.reconcile(["svc"])
        assert view(b)["c1"] == (3, 1, "c")
        await a.deregister("svc", "a1")  # deletion propagates
        await sync.reconcile(["svc"])
        assert view(a) == view(b) == view(c) == {"c1": (3, 1, "c")}
        for reg in (a, b, c):
            await reg.stop()

    asyncio.run(asyncio.wait_for(body(), 20))


def test_a_conflict_keeps_each_native_and_the_first_registry_wins_elsewhere(tmp_path: Path) -> None:
    async def body() -> None:
        a, b, c = (EmbeddedRegistry(n, tmp_path / f"{n}.json") for n in "abc")
        sync = RegistrySync([a, b, c], [Pair("a", "c"), Pair("b", "c"), Pair("a", "b", True)])
        for reg in (a, b, c):
            await reg.start(lambda names: None)
        await a.register(SVC, inst("x", 1))
        await b.register(SVC, inst("x", 2))
        await sync.reconcile(["svc"])
        assert view(a) == {"x": (1, 1, "a")} and view(b) == {"x": (2, 1, "b")}
        assert view(c) == {"x": (1, 1, "a")}
        assert SYNC_LABEL in c.instances("svc")[0].labels
        for reg in (a, b, c):
            await reg.stop()

    asyncio.run(asyncio.wait_for(body(), 20))


def test_the_model_hides_a_copy_behind_its_native_but_keeps_an_orphan_copy(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = EmbeddedRegistry("a", tmp_path / "a.json"), EmbeddedRegistry("b", tmp_path / "b.json")
        model = MeshModel([a, b])
        await a.register(SVC, inst("i", 1))
        copy = ServiceInstance(service="svc", id="i", address="127.0.0.1", port=1, labels={SOURCE_LABEL: "a"})
        await b.register(SVC, copy)
        model.refresh()
        assert [(i.origin, i.id) for i in model.instances("svc")] == [("a", "i")]
        await a.deregister("svc", "i")
        model.refresh()
        assert [(i.origin, i.id) for i in model.instances("svc")] == [("b", "i")]

    asyncio.run(asyncio.wait_for(body(), 20))
