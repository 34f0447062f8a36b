"""The embedded registry: persisted atomically, survives restarts, expires leases."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from sofamesh.core.errors import PluginError
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.plugins.registries.embedded.store import EmbeddedRegistry, atomic_write
from tests.unit.pilot.conftest import run

ECHO = Service("echo", "grpc")


def _inst(id: str, port: int = 9000) -> ServiceInstance:
    return ServiceInstance(service="echo", id=id, address="127.0.0.1", port=port)


def _started(path: Path, notified: list[set[str]] | None = None, clock: list[float] | None = None
             ) -> EmbeddedRegistry:
    reg = EmbeddedRegistry("embedded", path, reap_interval=3600,
                           clock=(lambda: clock[0]) if clock is not None else time.monotonic)

    async def start() -> None:
        await reg.start(lambda names: notified.append(set(names)) if notified is not None else None)

    run(start())
    return reg


def test_registered_instances_survive_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "reg.json"
    reg = _started(store)
    run(reg.register(ECHO, _inst("a"), None))
    run(reg.register(ECHO, _inst("b", 9001), 30))
    notified: list[set[str]] = []
    again = _started(store, notified)
    assert {i.id: i.port for i in again.instances("echo")} == {"a": 9000, "b": 9001}
    assert again.services()["echo"] == ECHO
    assert all(i.origin == "embedded" for i in again.instances("echo"))
    assert notified == [{"echo"}]
    assert "echo/b" in again.describe()["leases"]


def test_a_failed_write_leaves_the_previous_store_intact_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "reg.json"
    reg = _started(store)
    run(reg.register(ECHO, _inst("a"), None))
    before = store.read_bytes()

    def torn(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", torn)
    with pytest.raises(OSError, match="No space"):
        run(reg.register(ECHO, _inst("b"), None))
    assert store.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.json"]


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    atomic_write(target, b"x" * 10_000)
    atomic_write(target, b"short")
    assert target.read_bytes() == b"short"


def test_an_unreadable_store_is_a_plugin_error_naming_the_file(tmp_path: Path) -> None:
    store = tmp_path / "reg.json"
    store.write_text(json.dumps({"format": 99}))
    with pytest.raises(PluginError, match=r"reg\.json is unreadable: unknown format 99"):
        _started(store)


def test_a_leased_instance_expires_unless_it_heartbeats(tmp_path: Path) -> None:
    notified: list[set[str]] = []
    clock = [1000.0]
    reg = _started(tmp_path / "reg.json", notified, clock)
    run(reg.register(ECHO, _inst("lease"), 10))
    run(reg.register(ECHO, _inst("forever"), None))
    assert reg.describe()["leases"]["echo/lease"]["expires_in_s"] == 10
    clock[0] += 9
    assert run(reg.reap()) == []
    assert run(reg.heartbeat("echo", "lease")) is True
    clock[0] += 9
    assert run(reg.reap()) == []  # the heartbeat moved the deadline 10 s past itself
    clock[0] += 1
    assert run(reg.reap()) == [("echo", "lease")]
    assert [i.id for i in reg.instances("echo")] == ["forever"]
    assert notified[-1] == {"echo"}
    assert run(reg.heartbeat("echo", "lease")) is False
    assert [i["id"] for i in json.loads((tmp_path / "reg.json").read_text())["instances"]] == ["forever"]


def test_deregistering_an_unknown_instance_reports_false(tmp_path: Path) -> None:
    reg = _started(tmp_path / "reg.json")
    assert run(reg.deregister("echo", "nope")) is False
    run(reg.register(ECHO, _inst("a"), None))
    assert run(reg.deregister("echo", "a")) is True
    assert reg.instances("echo") == () and "echo" in reg.services()


def test_concurrent_registrations_share_disk_writes_and_all_reach_the_disk(tmp_path: Path) -> None:
    store = tmp_path / "reg.json"
    reg = _started(store)

    async def burst() -> None:
        await asyncio.gather(*(reg.register(ECHO, _inst(f"i{n}", 9000 + n), None) for n in range(50)))

    run(burst())
    on_disk = {i["id"] for i in json.loads(store.read_text())["instances"]}
    assert on_disk == {f"i{n}" for n in range(50)}
    assert 1 <= reg.writes < 50, reg.writes
