"""A served registry's two deadlines on a fake clock: unhealthy when the lease lapses, healthy again
on renewal, removed after ``remove_after_s``; re-registration keeps the first registration time;
an entry without a lease stays; each change is notified once."""

from __future__ import annotations

from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.served import Entry, ServedRegistry
from tests.unit.plugins.registries.served.test_shared_documents import Clock


def _entry(iid: str, lease_s: float | None = 10.0, remove_after_s: float | None = 30.0) -> Entry:
    inst = ServiceInstance(id=iid, service="web", address="127.0.0.1", port=80, origin="nacos")
    return Entry(Service("web"), inst, lease_s=lease_s, remove_after_s=remove_after_s)


def _setup() -> tuple[ServedRegistry, Clock, list[list[str]]]:
    clock = Clock()
    reg = ServedRegistry("nacos", None, clock=clock)
    notified: list[list[str]] = []
    reg._notify = lambda names: notified.append(sorted(names))
    return reg, clock, notified


def _health(reg: ServedRegistry) -> dict[str, Health]:
    return {i.id: i.health for i in reg.instances("web")}


def test_a_lapsed_lease_is_unhealthy_then_removed_and_a_renewal_brings_it_back() -> None:
    reg, clock, notified = _setup()
    reg.put(_entry("a"))
    reg.put(_entry("forever", lease_s=None, remove_after_s=None))
    notified.clear()
    clock.now += 9.9
    assert reg.reap() == [] and notified == []
    clock.now += 0.2
    assert reg.reap() == []
    assert _health(reg) == {"a": Health.UNHEALTHY, "forever": Health.HEALTHY}
    assert notified == [["web"]]
    assert reg.reap() == [] and notified == [["web"]]  # lapsing is told once
    assert reg.renew("web", "a") is not None
    assert _health(reg)["a"] is Health.HEALTHY and notified == [["web"], ["web"]]
    clock.now += 30.0
    assert reg.reap() == [("web", "a")]
    assert _health(reg) == {"forever": Health.HEALTHY}
    assert reg.expired == 1
    assert reg.renew("web", "a") is None


def test_re_registering_keeps_the_registration_time_and_restarts_the_lease() -> None:
    reg, clock, _ = _setup()
    reg.put(_entry("a"))
    first = clock.now
    clock.now += 8
    reg.put(_entry("a"))
    entry = reg.entry("web", "a")
    assert entry is not None and entry.registered_at == first and entry.renewed_at == clock.now
    clock.now += 8  # 16 s after the first registration, 8 s after the second
    reg.reap()
    assert _health(reg) == {"a": Health.HEALTHY}


def test_removing_the_last_instance_removes_the_service() -> None:
    reg, _clock, notified = _setup()
    reg.put(_entry("a"))
    assert reg.remove("web", "a") is not None
    assert dict(reg.services()) == {} and reg.instances("web") == ()
    assert reg.remove("web", "a") is None
    assert notified == [["web"], ["web"]]
