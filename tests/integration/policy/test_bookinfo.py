"""Istio's bookinfo networking samples, applied unchanged with ``sofamesh apply``, over services
registered through the Open Service Registry API with ``labels: {version: v1|v2|v3}``; measured
at once through a real Envoy 1.40 and through a sofamesh sidecar, both fed by the same Pilot."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.pilot.conftest import PilotProcess
from tests.integration.pilot.test_envoy import Envoy, HttpBackend
from tests.integration.policy.apply import BOOKINFO, apply, follows
from tests.integration.xds.mesh import Sidecar, wait_for

JASON = {"end-user": "jason"}


class Proxy:
    """An HTTP egress listener reached by service name (``Host``)."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15)

    def get(self, host: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        try:
            r = self.client.get("/", headers={"Host": host, **(headers or {})})
        except httpx.HTTPError as exc:
            return 0, type(exc).__name__
        return r.status_code, r.text

    def served(self, host: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        return Counter(body if status == 200 else str(status) for status, body in
                       (self.get(host, headers) for _ in range(n)))


@pytest.fixture
def bookinfo(tmp_path: Path) -> Iterator[tuple[PilotProcess, list[Proxy], Envoy, Sidecar]]:
    pilot = PilotProcess(tmp_path / "data").start()
    backends = [HttpBackend(f"reviews-v{v}") for v in (1, 2, 3)] + [HttpBackend("ratings-v1")]
    envoy: Envoy | None = None
    sidecar: Sidecar | None = None
    proxies: list[Proxy] = []
    try:
        for b in backends:
            service, version = b.name.split("-")
            pilot.register(service, b.name, address="127.0.0.1", port=b.port, protocol="http",
                           labels={"version": version})
        envoy = Envoy(tmp_path, pilot, "DELTA_GRPC")
        sidecar = Sidecar(pilot.xds_port, "bookinfo-sidecar").start()
        proxies += [Proxy("envoy", envoy.outbound_port), Proxy("sofamesh", sidecar.ports["http"])]
        for p in proxies:
            wait_for(lambda p=p: p.get("reviews")[0] == 200, 20, f"{p.name} serving reviews")
        yield pilot, proxies, envoy, sidecar
    finally:
        for p in proxies:
            p.client.close()
        if sidecar is not None:
            sidecar.stop()
        if envoy is not None:
            envoy.stop()
        pilot.stop()
        for b in backends:
            b.stop()


def _all(proxies: list[Proxy], check: object) -> bool:
    return all(check(p) for p in proxies)  # type: ignore[operator]


def test_bookinfo_samples_route_the_same_through_envoy_and_a_sofamesh_sidecar(
        bookinfo: tuple[PilotProcess, list[Proxy], Envoy, Sidecar]) -> None:
    pilot, proxies, envoy, sidecar = bookinfo
    followed: dict[str, float] = {}

    # every host form of the service reaches it
    for p in proxies:
        for host in ("reviews", "reviews.default", "reviews.default.svc.cluster.local", "reviews:80"):
            assert p.get(host)[0] == 200, (p.name, host)

    t = apply(pilot.api_url, BOOKINFO / "destination-rule-all.yaml", BOOKINFO / "virtual-service-all-v1.yaml")
    followed["all-v1"] = follows(lambda: _all(proxies, lambda p: p.served("reviews", 10) == {"reviews-v1": 10}),
                                 t, "virtual-service-all-v1")

    t = apply(pilot.api_url, BOOKINFO / "virtual-service-reviews-80-20.yaml")
    followed["80-20"] = follows(lambda: _all(proxies, lambda p: "reviews-v2" in p.served("reviews", 30)),
                                t, "virtual-service-reviews-80-20")
    for p in proxies:
        served = p.served("reviews", 1000)
        assert set(served) == {"reviews-v1", "reviews-v2"}, (p.name, served)
        assert 750 <= served["reviews-v1"] <= 850, (p.name, served)

    t = apply(pilot.api_url, BOOKINFO / "virtual-service-reviews-jason-v2-v3.yaml")
    followed["jason-v2-v3"] = follows(
        lambda: _all(proxies, lambda p: p.served("reviews", 10) == {"reviews-v3": 10}), t,
        "virtual-service-reviews-jason-v2-v3")
    for p in proxies:
        assert p.served("reviews", 50, JASON) == {"reviews-v2": 50}, p.name
        assert p.served("reviews", 50, {"end-user": "jasonx"}) == {"reviews-v3": 50}, p.name

    t = apply(pilot.api_url, BOOKINFO / "virtual-service-ratings-test-abort.yaml")
    followed["ratings-abort"] = follows(lambda: _all(proxies, lambda p: p.get("ratings", JASON)[0] == 500), t,
                                        "virtual-service-ratings-test-abort")
    for p in proxies:
        assert p.served("ratings", 20, JASON) == {"500": 20}, p.name
        assert p.served("ratings", 20) == {"ratings-v1": 20}, p.name

    # The published 7 s delay, unchanged: each proxy is measured in its own thread.
    t = apply(pilot.api_url, BOOKINFO / "virtual-service-ratings-test-delay.yaml")
    envoy_routes = f"http://127.0.0.1:{envoy.admin_port}/config_dump?resource=dynamic_route_configs"
    followed["ratings-delay"] = follows(  # a request would take the delay itself: read both configs
        lambda: "fixed_delay_ms" in str(sidecar.dump()["config"]["listeners"])
        and '"fixed_delay": "7s"' in httpx.get(envoy_routes, timeout=5).text, t,
        "virtual-service-ratings-test-delay")

    def timed(p: Proxy) -> tuple[float, tuple[int, str], float]:
        start = time.monotonic()
        delayed = p.get("ratings", JASON)
        took = time.monotonic() - start
        start = time.monotonic()
        assert p.get("ratings") == (200, "ratings-v1")
        return took, delayed, time.monotonic() - start

    with ThreadPoolExecutor(2) as pool:
        for p, (took, delayed, plain) in zip(proxies, pool.map(timed, proxies), strict=True):
            assert delayed == (200, "ratings-v1"), p.name
            assert took >= 7.0 - 0.005, (p.name, took)  # Envoy's timer may fire a fraction of a ms early
            assert plain < 1.0, (p.name, plain)

    # each change reached both proxies within a second of `sofamesh apply` returning
    assert max(followed.values()) < 1.0, followed
    stats = envoy.stats()
    assert {v for k, v in stats.items() if k.endswith(".update_rejected")} == {0}
    xds = sidecar.dump()["xds"]
    assert xds["last_nack"] is None, xds["last_nack"]
    print(f"\npolicy followed by Envoy and the sofamesh sidecar after apply returned (s): {followed}")
