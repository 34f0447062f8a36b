"""telemetry through a running proxy: istio_* metrics on the admin port scraped by a real
Prometheus, JSON access-log lines, and counters that follow the traffic."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config
from tests.integration.servers import PrometheusServer


def _series(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name):]] = float(value)
    return out


def test_istio_metrics_count_requests_by_response_code_and_path_template(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    tel = {"workload": "items-v1", "principal": "spiffe://cluster.local/ns/default/sa/items",
           "path_templates": ["/items/{id}"]}
    cfg, port = http_proxy_config([upstream.address], filters=[
        {"type": "authz.rbac", "config": {"policies": [
            {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/items/9"]}}]}]}]}},
        {"type": "telemetry", "config": tel}])
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        for i in range(5):
            assert c.get(f"/items/{i}").status_code == 200
        assert c.get("/items/9").status_code == 403
        assert c.post("/other", content=b"x" * 100).status_code == 200
    text = proxy.get("/stats/prometheus").decode()
    total = _series(text, "istio_requests_total")
    ok = [v for k, v in total.items() if 'request_operation="GET /items/{id}"' in k and 'response_code="200"' in k]
    denied = [v for k, v in total.items() if 'response_code="403"' in k]
    other = [k for k in total if 'request_operation="unknown"' in k]
    assert ok == [5.0] and denied == [1.0] and len(other) == 1
    assert 'destination_workload="items-v1"' in other[0] and 'reporter="destination"' in other[0]
    assert 'request_protocol="http1"' in other[0]
    counts = _series(text, "istio_request_duration_milliseconds_count")
    assert sorted(counts.values()) == [1.0, 1.0, 5.0]
    req_bytes = _series(text, "istio_request_bytes_sum")
    assert 100.0 in req_bytes.values()
    resp_bytes = _series(text, "istio_response_bytes_sum")
    assert max(resp_bytes.values()) == 5 * len("up-a GET /items/0\n")


def test_real_prometheus_scrapes_istio_requests_total_from_the_admin_port(
        upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "telemetry", "config": {"workload": "web"}}])
    proxy = proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        for i in range(7):
            c.get(f"/p/{i}")
    admin = proxy.admin_url.removeprefix("http://")
    with PrometheusServer([admin], metrics_path="/stats/prometheus") as prom:
        result = prom.query_until('istio_requests_total{destination_workload="web"}')
        hist = prom.query_until("istio_request_duration_milliseconds_count")
    assert len(result) == 1
    metric = result[0]["metric"]
    assert metric["response_code"] == "200" and metric["request_protocol"] == "http1"
    assert metric["job"] == "sidecar"
    assert float(result[0]["value"][1]) == 7.0
    assert float(hist[0]["value"][1]) == 7.0


def test_access_log_lines_are_json_with_the_configured_fields(
        tmp_path: Path, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    log = tmp_path / "access.log"
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "telemetry", "config": {
        "metrics": False,
        "access_log": {"path": str(log), "fields": ["method", "path", "response_code", "upstream_host",
                                                     "duration_ms", "start_time", "source_address"], "flush_ms": 50}}}])
    proxy = proxy_factory(cfg)
    before = time.time()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        for i in range(4):
            c.get(f"/log/{i}")
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(rows) < 4:
        time.sleep(0.1)
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert [r["path"] for r in rows] == [f"/log/{i}" for i in range(4)]
    assert {r["method"] for r in rows} == {"GET"} and {r["response_code"] for r in rows} == {200}
    assert {r["upstream_host"] for r in rows} == {upstream.address}
    assert all(before - 1 <= float(r["start_time"]) <= time.time() for r in rows)  # type: ignore[arg-type]
    assert {r["source_address"] for r in rows} == {"127.0.0.1"}
    assert set(rows[0]) == {"method", "path", "response_code", "upstream_host", "duration_ms", "start_time",
                            "source_address"}
    assert "istio_requests_total" not in proxy.get("/stats/prometheus").decode()
    assert re.search(r"^sofamesh_downstream_rq_total\{.*\} 4$", proxy.get("/stats/prometheus").decode(), re.M)
