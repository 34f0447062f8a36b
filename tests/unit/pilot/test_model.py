"""Service / ServiceInstance validation and the merged, indexed mesh model."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence

import pytest

from sofamesh.core.errors import ConfigError
from sofamesh.pilot.model import Health, MeshModel, Service, ServiceInstance, parse_ttl
from sofamesh.pilot.registry import Notify, Registry

from .conftest import run


def inst(service: str = "echo", id: str = "a", **kw: object) -> ServiceInstance:
    return ServiceInstance(
        service=service,
        id=id,
        address=kw.pop("address", "127.0.0.1"),  # type: ignore[arg-type]
        port=kw.pop("port", 9000),
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": "80"}, "port"),
        ({"weight": 0}, "weight"),
        ({"weight": True}, "weight"),
        ({"address": ""}, "address"),
        ({"address": "bad host!"}, "address"),
        ({"labels": {"zone": 1}}, "labels.zone"),
        ({"health": "sick"}, "health"),
        ({"id": "has space"}, "id"),
        ({"version": 3}, "version"),
    ],
)
def test_an_invalid_instance_field_is_named_in_the_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        inst(**kwargs)
    assert err.value.path == field


def test_a_service_without_ports_is_addressed_on_its_protocols_default_port() -> None:
    assert Service("echo", "grpc").ports == (80,)
    assert Service("com.example.Echo:1.0", "bolt").port == 12200
    assert Service("d", "dubbo", ports=(20881, 20882)).ports == (20881, 20882)
    with pytest.raises(ConfigError, match="unknown protocol 'soap'"):
        Service("x", "soap")
    # found by fuzzing the registry API (fuzz/crashes/osr_api): an object as the protocol was a TypeError (500)
    with pytest.raises(ConfigError, match=re.escape("unknown protocol {'version': 'v1'}")) as err:
        Service("x", {"version": "v1"})  # type: ignore[arg-type]
    assert err.value.path == "protocol"


def test_instances_round_trip_through_their_dict_form() -> None:
    i = inst(labels={"zone": "z1"}, version="1.0", group="g", health="draining", weight=3, origin="embedded")
    assert ServiceInstance.from_dict(i.to_dict()) == i
    assert i.health is Health.DRAINING and i.locality == ("", "z1", "")


def test_ttl_zero_means_no_lease_and_nonsense_is_refused() -> None:
    assert parse_ttl(0) is None and parse_ttl(None) is None and parse_ttl(2) == 2.0
    for bad in (-1, "5", float("nan"), 10**6):
        with pytest.raises(ConfigError, match="ttl_seconds"):
            parse_ttl(bad)


class FakeRegistry(Registry):
    """A plain in-memory registry (the model's input; no I/O to fake)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.svcs: dict[str, Service] = {}
        self.insts: dict[str, list[ServiceInstance]] = {}

    async def start(self, notify: Notify) -> None:
        pass

    async def stop(self) -> None:
        pass

    def services(self) -> Mapping[str, Service]:
        return self.svcs

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return self.insts.get(service, [])

    def put(self, *instances: ServiceInstance, protocol: str = "grpc") -> None:
        for i in instances:
            self.svcs.setdefault(i.service, Service(i.service, protocol))
            self.insts.setdefault(i.service, []).append(i)


def test_the_model_merges_registries_and_counts_only_real_changes() -> None:
    zk, etcd = FakeRegistry("zk"), FakeRegistry("etcd")
    zk.put(inst(id="a", origin="zk"))
    etcd.put(inst(id="b", origin="etcd"), protocol="http")
    model = MeshModel([zk, etcd])
    seen: list[Iterable[str]] = []
    model.add_listener(seen.append)
    assert model.refresh() == {"echo"}
    assert model.service("echo") == Service("echo", "grpc")  # first registry wins
    assert [i.origin for i in model.instances("echo")] == ["etcd", "zk"]
    index = model.index
    assert model.refresh() == frozenset() and model.index == index and len(seen) == 1
    zk.insts["echo"].clear()
    assert model.refresh(["echo"]) == {"echo"} and model.service_index("echo") == index + 1
    del zk.svcs["echo"], etcd.svcs["echo"]
    assert model.refresh(["echo"]) == {"echo"} and model.service("echo") is None


def test_a_blocking_wait_returns_on_change_or_after_its_timeout() -> None:
    reg = FakeRegistry("r")
    model = MeshModel([reg])

    async def scenario() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        timed_out = await model.wait("echo", model.service_index("echo"), 0.1)
        waiter = asyncio.ensure_future(model.wait("echo", model.service_index("echo"), 5))
        await asyncio.sleep(0.05)
        reg.put(inst())
        model.refresh(["echo"])
        woke = await waiter
        return timed_out, woke, loop.time() - start

    timed_out, woke, elapsed = run(scenario(), 10)
    assert timed_out == 0 and woke == model.service_index("echo") > 0 and elapsed < 2
