"""How a served registry takes the entries other replicas wrote to the shared store: the document
round trip, a renewal through another replica, a removal there, and its own newer renewal kept."""

from __future__ import annotations

import time

from sofamesh.pilot.model import Health, Service, ServiceInstance
from sofamesh.plugins.registries.served import Entry, ServedRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _registry(clock: Clock) -> tuple[ServedRegistry, list[list[str]]]:
    reg = ServedRegistry("eureka", None, clock=clock)
    notified: list[list[str]] = []
    reg._notify = lambda names: notified.append(sorted(names))
    return reg, notified


def _entry() -> Entry:
    return Entry(
        Service("web"),
        ServiceInstance(id="w1", service="web", address="127.0.0.1", port=80, origin="eureka"),
        lease_s=None,
        remove_after_s=3.0,
        wire={"app": "WEB"},
    )


def test_an_entry_written_by_another_replica_is_listed_and_lapses_from_its_own_renewal_time() -> None:
    clock = Clock()
    a, _ = _registry(clock)
    a.put(_entry())
    doc = a._document(a.entry("web", "w1"))  # type: ignore[arg-type]
    b, notified = _registry(clock)
    b._shared_event("web", "w1", doc)
    got = b.entry("web", "w1")
    assert got is not None and got.wire == {"app": "WEB"} and got.instance.origin == "eureka"
    assert notified == [["web"]]
    clock.now += 2.0
    doc["renewed_at"] = time.time()  # renewed through a third replica just now
    b._shared_event("web", "w1", doc)
    clock.now += 2.0  # 4 s after registering, 2 s after that renewal: kept
    assert b.reap() == [] and b.instances("web")[0].health is Health.HEALTHY
    clock.now += 1.5
    assert b.reap() == [("web", "w1")]


def test_a_removal_through_another_replica_drops_it_and_an_older_copy_never_undoes_a_newer_renewal() -> None:
    clock = Clock()
    b, notified = _registry(clock)
    b.put(_entry())
    old = b._document(b.entry("web", "w1"))  # type: ignore[arg-type]
    clock.now += 2.5
    b.renew("web", "w1")  # through B, not yet written back
    b._shared_event("web", "w1", old)  # the store's copy from before that renewal
    clock.now += 1.0
    assert b.reap() == []  # 3.5 s after registering, 1 s after B's own renewal
    b._shared_event("web", "w1", None)
    assert b.entry("web", "w1") is None and notified[-1] == ["web"]
