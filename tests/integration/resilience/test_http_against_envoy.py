"""The same resilience scenarios against a real Envoy and against sofamesh with the equivalent
config, in one test each: what a client and the backends observe must agree."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

from sofamesh.testing import ProxyProcess, free_port

from .peers import PREVIOUS_HOSTS, Backend, StaticEnvoy, http_listener, static_cluster

CONSECUTIVE_5XX = 3


def _get_many(port: int, n: int) -> list[int]:
    """``n`` GETs one after the other on one keep-alive connection: their statuses."""
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            conn.request("GET", f"/r{i}")
            r = conn.getresponse()
            r.read()
            out.append(r.status)
    finally:
        conn.close()
    return out


# -- (a) one endpoint of three answers 503 to everything ---------------------------------------------
def failing_endpoint_resources(port: int, addresses: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Scenario (a) in Envoy's terms (listeners, clusters): retry 5xx on other hosts, eject after
    ``CONSECUTIVE_5XX``; the xDS test serves the same resources to a sidecar."""
    vhost = {"name": "all", "domains": ["*"], "include_request_attempt_count": True, "routes": [{
        "match": {"prefix": "/"},
        "route": {"cluster": "web", "retry_policy": {
            "retry_on": "5xx", "num_retries": 3, "retry_host_predicate": [PREVIOUS_HOSTS],
            "host_selection_retry_max_attempts": 3}}}]}
    cluster = static_cluster("web", addresses, outlier_detection={
        "consecutive_5xx": CONSECUTIVE_5XX, "interval": "1s", "base_ejection_time": "60s",
        "max_ejection_percent": 100})
    return [http_listener("web", port, vhost)], [cluster]


def _failing_endpoint_sofamesh(port: int, backends: list[Backend]) -> ProxyProcess:
    return ProxyProcess({
        "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"], "routes": [{
            "name": "all", "cluster": "web",
            "retry_policy": {"retry_on": ["5xx"], "num_retries": 3}}]}],
        "clusters": [{"name": "web", "endpoints": [b.address for b in backends], "outlier_detection": {
            "consecutive_5xx": CONSECUTIVE_5XX, "interval_ms": 1000, "base_ejection_time_ms": 60000,
            "max_ejection_percent": 100}}]})


def observe_failing_endpoint(port: int, good: list[Backend], bad: Backend) -> dict[str, Any]:
    statuses = _get_many(port, 1000)
    return {"errors": sum(1 for s in statuses if s != 200), "bad_requests": bad.requests,
            "served": sum(b.requests for b in good),
            "attempt_counts": set().union(*(b.attempts for b in good)) | bad.attempts}


def test_one_endpoint_answering_503_is_retried_and_ejected_as_envoy_does() -> None:
    with Backend("good1") as g1, Backend("good2") as g2, Backend("bad", status=503) as bad:
        backends = [g1, g2, bad]
        seen: dict[str, dict[str, Any]] = {}
        port = free_port()
        with StaticEnvoy(*failing_endpoint_resources(port, [b.address for b in backends])) as envoy:
            seen["envoy"] = observe_failing_endpoint(port, [g1, g2], bad)
            stats = envoy.stats()
            seen["envoy"].update(
                ejections=stats["cluster.web.outlier_detection.ejections_enforced_consecutive_5xx"],
                retries=stats["cluster.web.upstream_rq_retry"],
                retry_successes=stats["cluster.web.upstream_rq_retry_success"],
                bad_flags=envoy.health_flags("web")[bad.address])
        for b in backends:
            b.reset_counts()
        port = free_port()
        with _failing_endpoint_sofamesh(port, backends) as proxy:
            seen["sofamesh"] = observe_failing_endpoint(port, [g1, g2], bad)
            web = proxy.stats()["clusters"]["web"]
            flags = {e["address"]: e["health_flags"] for e in json.loads(proxy.get("/clusters"))["web"]["endpoints"]}
            seen["sofamesh"].update(
                ejections=web["outlier_detection_ejections_enforced_consecutive_5xx"],
                retries=web["upstream_rq_retry"], retry_successes=web["upstream_rq_retry_success"],
                bad_flags=flags[bad.address])
    assert seen["sofamesh"] == seen["envoy"]
    assert seen["envoy"]["errors"] == 0 and seen["envoy"]["bad_requests"] == CONSECUTIVE_5XX
    assert seen["envoy"]["bad_flags"] == "/failed_outlier_check"
    assert seen["envoy"]["attempt_counts"] == {"1", "2"}


# -- (b) circuit breaker max_requests 10 against 100 concurrent clients ---------------------------------
MAX_REQUESTS = 10
CLIENTS = 100
HOLD = 1.0  # the backend holds every request this long: overflow replies must come well before


def _burst(port: int) -> list[tuple[int, str | None, float]]:
    """``CLIENTS`` clients, each on its own connection, send one GET at the same moment:
    (status, x-envoy-overloaded, seconds) for each."""
    barrier = threading.Barrier(CLIENTS)
    out: list[tuple[int, str | None, float]] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.connect()
            barrier.wait(10)
            t0 = time.monotonic()
            conn.request("GET", "/")
            r = conn.getresponse()
            r.read()
            with lock:
                out.append((r.status, r.getheader("x-envoy-overloaded"), time.monotonic() - t0))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def _observe_burst(port: int, backend: Backend) -> dict[str, Any]:
    results = _burst(port)
    ok = [r for r in results if r[0] == 200]
    overflow = [r for r in results if r[0] != 200]
    return {"answered": len(results), "ok": len(ok), "overflow": len(overflow),
            "overflow_statuses": {r[0] for r in overflow},
            "overflow_marked": {r[1] for r in overflow},
            "overflow_at_once": all(r[2] < HOLD / 2 for r in overflow),
            "max_upstream_in_flight_within_limit": backend.max_in_flight <= MAX_REQUESTS,
            "overflowed": len(overflow) >= CLIENTS - 2 * MAX_REQUESTS}


def test_max_requests_overflow_is_answered_at_once_and_caps_upstream_concurrency_as_envoy_does() -> None:
    with Backend("slow", delay=HOLD) as slow:
        seen: dict[str, dict[str, Any]] = {}
        port = free_port()
        vhost = {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}
        cluster = static_cluster("web", [slow.address],
                                 circuit_breakers={"thresholds": [{"max_requests": MAX_REQUESTS}]})
        with StaticEnvoy([http_listener("web", port, vhost)], [cluster]) as envoy:
            seen["envoy"] = _observe_burst(port, slow)
            stats = envoy.stats()
            seen["envoy"]["overflow_counted"] = stats["cluster.web.upstream_rq_active_overflow"]
            seen["envoy"]["upstream_503_counted"] = stats["cluster.web.upstream_rq_5xx"]
            envoy_max = slow.max_in_flight
        slow.reset_counts()
        port = free_port()
        with ProxyProcess({
            "listeners": [{"name": "web", "address": f"127.0.0.1:{port}", "protocols": ["http1"],
                           "routes": [{"name": "all", "cluster": "web"}]}],
            "clusters": [{"name": "web", "endpoints": [slow.address],
                          "circuit_breakers": {"max_requests": MAX_REQUESTS}}]}) as proxy:
            seen["sofamesh"] = _observe_burst(port, slow)
            web = proxy.stats()["clusters"]["web"]
            seen["sofamesh"]["overflow_counted"] = web["upstream_rq_active_overflow"]
            seen["sofamesh"]["upstream_503_counted"] = web["upstream_rq_5xx"]
    assert seen["sofamesh"] == seen["envoy"], (seen, envoy_max, slow.max_in_flight)
    assert seen["envoy"]["answered"] == CLIENTS and seen["envoy"]["overflow_statuses"] == {503}
    assert seen["envoy"]["overflow_marked"] == {"true"} and seen["envoy"]["overflow_at_once"]
    assert seen["envoy"]["max_upstream_in_flight_within_limit"] and seen["envoy"]["overflowed"]
    assert seen["envoy"]["overflow_counted"] == seen["envoy"]["overflow"] == seen["envoy"]["upstream_503_counted"]
