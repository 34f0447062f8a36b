"""DestinationRule ``localityLbSetting`` through a real Envoy 1.40 and a sofamesh sidecar, both in
zone ``r1/a`` and fed by one Pilot; the instances' localities are Istio's topology labels in the
registry: ``distribute`` splits 80/20 between the zones, failover keeps traffic in the proxy's zone
until its instances stop, then the other zone serves; ``failover`` from the proxy's region ``r1``
to ``r3`` sends traffic to ``r3`` once ``r1``'s instances stop, before ``r2``; ``failoverPriority`` puts the instances sharing
the proxy's label first; ``warmupDurationSecs`` gives a new instance a small share."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy, HttpBackend
from tests.integration.policy.apply import apply, follows
from tests.integration.policy.test_bookinfo import Proxy
from tests.integration.xds.mesh import Sidecar, wait_for


def _rule(traffic_policy: str) -> str:
    """A DestinationRule for ``web`` with this ``trafficPolicy`` (YAML, indented by four)."""
    head = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\n"
    return head + "spec:\n  host: web\n  trafficPolicy:\n" + traffic_policy


DISTRIBUTE = _rule("""    loadBalancer:
      localityLbSetting:
        distribute:
        - from: r1/a/*
          to: {"r1/a/*": 80, "r1/b/*": 20}
""")
FAILOVER = _rule("""    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
""")
LABEL_FIRST = _rule("""    loadBalancer:
      localityLbSetting: {failoverPriority: [tier, topology.kubernetes.io/zone]}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
""")
WARMUP = _rule("    loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 12s}\n")


Zones = tuple[PilotProcess, list[Proxy], dict[str, HttpBackend], Envoy, Sidecar]


def _zone(body: str) -> str:
    return body.split("-")[1] if body.startswith("web-") else body


def _labels(name: str) -> dict[str, str]:
    """web-a-1: zone a of region r1 (tier gold in zone b, as the proxies); web-r2-1: region r2, zone a."""
    place = name.split("-")[1]
    if place.startswith("r"):
        return {"topology.kubernetes.io/region": place, "topology.kubernetes.io/zone": "a"}
    labels = {"topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": place}
    if place == "b":
        labels["tier"] = "gold"  # as the proxies (node metadata LABELS)
    return labels


def _register(pilot: PilotProcess, name: str, port: int) -> None:
    pilot.register("web", name, address="127.0.0.1", port=port, protocol="http", labels=_labels(name))


@contextlib.contextmanager
def _placed(tmp_path: Path, names: tuple[str, ...]) -> Iterator[Zones]:
    """Pilot with an HTTP instance ``web`` per name (placed by :func:`_labels`), and a real Envoy and
    a sofamesh sidecar, both in r1/a with ``LABELS: {tier: gold}``, each reaching every instance."""
    with contextlib.ExitStack() as stack:
        pilot = PilotProcess(tmp_path / "data").start()
        stack.callback(pilot.stop)
        backends: dict[str, HttpBackend] = {}
        stack.callback(lambda: [b.stop() for b in backends.values()])
        for name in names:
            backends[name] = HttpBackend(name)
            _register(pilot, name, backends[name].port)
        gold = {"LABELS": {"tier": "gold"}}
        envoy = Envoy(tmp_path, pilot, "DELTA_GRPC", locality={"region": "r1", "zone": "a"}, metadata=gold)
        stack.callback(envoy.stop)
        sidecar = Sidecar(pilot.xds_port, "zone-a-sidecar", locality="r1/a", metadata=gold).start()
        stack.callback(sidecar.stop)
        proxies = [Proxy("envoy", envoy.outbound_port), Proxy("sofamesh", sidecar.ports["http"])]
        for p in proxies:
            stack.callback(p.client.close)
            wait_for(lambda p=p: set(p.served("web", 20)) == set(backends), 20, f"{p.name} serving every instance")
        yield pilot, proxies, backends, envoy, sidecar


@pytest.fixture
def zones(tmp_path: Path) -> Iterator[Zones]:
    with _placed(tmp_path, ("web-a-1", "web-a-2", "web-b-1", "web-b-2")) as placed:
        yield placed


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Zones]:
    with _placed(tmp_path, ("web-r1-1", "web-r1-2", "web-r2-1", "web-r3-1")) as placed:
        yield placed


def _zones(p: Proxy, n: int) -> Counter[str]:
    return Counter(_zone(body) for body in p.served("web", n).elements())


def test_distribute_splits_80_20_between_zones_on_envoy_and_the_sidecar(zones: Zones) -> None:
    pilot, proxies, _backends, _envoy, _sidecar = zones
    for p in proxies:  # without a rule: both zones, evenly
        even = _zones(p, 200)
        assert 70 <= even["a"] <= 130 and even["a"] + even["b"] == 200, (p.name, even)
    t = apply(pilot.api_url, stdin=DISTRIBUTE)
    follows(lambda: all(_zones(p, 50)["a"] >= 35 for p in proxies), t, "distribute", timeout=10)
    for p in proxies:
        split = _zones(p, 1000)
        assert set(split) == {"a", "b"}, (p.name, split)
        assert 750 <= split["a"] <= 850, (p.name, split)


def _fails_over(zones: Zones, rule: str, first: str, *then: str) -> None:
    """After ``rule``, every call goes to zone (or region) ``first``; once its instances stop (each
    refused connection is a 503 the outlier detector counts), every call goes to the next of
    ``then``, and so on as each of those stops in turn."""
    pilot, proxies, backends, _envoy, _sidecar = zones
    t = apply(pilot.api_url, stdin=rule)
    follows(lambda: all(_zones(p, 40) == {first: 40} for p in proxies), t, "the priorities", timeout=10)
    for p in proxies:
        assert _zones(p, 200) == {first: 200}, p.name
    for stopped, serving in zip((first, *then), then, strict=False):
        for name, backend in backends.items():
            if _zone(name) == stopped:
                backend.stop()
        for p in proxies:
            wait_for(lambda p=p, z=serving: _zones(p, 20) == {z: 20}, 20, f"{p.name} failing over to {serving}")
            assert _zones(p, 200) == {serving: 200}, p.name


def test_failover_keeps_the_proxys_zone_until_its_instances_stop(zones: Zones) -> None:
    _fails_over(zones, FAILOVER, "a", "b")


def _newcomer_share(p: Proxy) -> Counter[str]:
    wait_for(lambda: "web-a-new" in p.served("web", 50), 20, f"{p.name} reaching the new instance")
    return p.served("web", 200)


def test_warmup_gives_a_new_instance_a_small_share_during_its_window(zones: Zones) -> None:
    pilot, proxies, backends, envoy, sidecar = zones
    t = apply(pilot.api_url, stdin=WARMUP)
    dump = f"http://127.0.0.1:{envoy.admin_port}/config_dump?resource=dynamic_active_clusters"
    follows(
        lambda: (
            "slow_start_config" in httpx.get(dump, timeout=5).text
            and "slow_start" in str(sidecar.dump()["config"]["clusters"])
        ),
        t,
        "warmup",
        timeout=10,
    )
    # Envoy rebuilt the cluster with the new policy, so its instances start a window of their own:
    # let it pass before a new instance joins
    time.sleep(13)
    newcomer = HttpBackend("web-a-new")
    backends["web-a-new"] = newcomer  # the fixture stops it
    _register(pilot, "web-a-new", newcomer.port)
    with ThreadPoolExecutor(2) as pool:
        shares = dict(zip((p.name for p in proxies), pool.map(_newcomer_share, proxies), strict=True))
    for name, served in shares.items():
        # five instances: 40 each of 200 without warmup; in its first seconds the newcomer weighs
        # 10-25 % of the others
        assert 0 < served["web-a-new"] <= 20, (name, served)
        assert all(served[b] >= 30 for b in ("web-a-1", "web-a-2", "web-b-1", "web-b-2")), (name, served)


FROM_TO = _rule("""    loadBalancer:
      localityLbSetting:
        failover:
        - {from: r1, to: r3}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
""")


def test_failover_from_the_proxys_region_goes_to_the_named_region_before_the_others(regions: Zones) -> None:
    # proxies in r1; r1 first, then the failover entry's r3 (though r2 is as near), then r2
    _fails_over(regions, FROM_TO, "r1", "r3", "r2")


def test_failover_priority_prefers_instances_sharing_the_proxys_labels_over_its_zone(zones: Zones) -> None:
    _fails_over(zones, LABEL_FIRST, "b", "a")  # tier gold (zone b) first, though the proxies run in zone a
