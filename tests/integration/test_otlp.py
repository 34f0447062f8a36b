"""OpenTelemetry export to an OTLP/gRPC receiver the test starts (built from opentelemetry-proto's
services; no collector binary exists here): spans joined across two sidecars by W3C traceparent,
and istio_requests exported as OTLP metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from sofamesh.testing import ProxyProcess, UpstreamServer
from tests.conftest import http_proxy_config
from tests.integration.otlp_receiver import OtlpReceiver

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def test_spans_of_two_sidecars_join_the_callers_trace_as_parent_and_child(
        otlp: OtlpReceiver, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    tracing = {"endpoint": otlp.address, "sampling": 0, "flush_ms": 100}
    in_cfg, in_port = http_proxy_config([upstream.address], filters=[{"type": "telemetry", "config": {
        "reporter": "destination", "service_name": "web-sidecar", "metrics": False, "tracing": tracing}}])
    proxy_factory(in_cfg)
    out_cfg, out_port = http_proxy_config([f"127.0.0.1:{in_port}"], filters=[{"type": "telemetry", "config": {
        "reporter": "source", "service_name": "shop-sidecar", "metrics": False, "tracing": tracing}}])
    proxy_factory(out_cfg)
    traceparent = f"00-{TRACE:032x}-{CLIENT_SPAN:016x}-01"
    r = httpx.get(f"http://127.0.0.1:{out_port}/echo", headers={"traceparent": traceparent}, timeout=5)
    unsampled = httpx.get(f"http://127.0.0.1:{out_port}/echo", timeout=5)  # no parent, sampling 0 %
    assert r.status_code == 200 and unsampled.status_code == 200
    def both() -> list[tuple[str, object]] | None:
        got = otlp.spans()
        return got if len(got) >= 2 else None

    spans = otlp.wait_for(both)
    by_service = {svc: sp for svc, sp in spans}
    assert set(by_service) == {"shop-sidecar", "web-sidecar"} and len(spans) == 2
    shop, web = by_service["shop-sidecar"], by_service["web-sidecar"]
    assert int.from_bytes(shop.trace_id, "big") == TRACE == int.from_bytes(web.trace_id, "big")
    assert int.from_bytes(shop.parent_span_id, "big") == CLIENT_SPAN
    assert web.parent_span_id == shop.span_id
    assert shop.name == "GET /echo" and shop.kind == 3 and web.kind == 2  # CLIENT, SERVER
    # the upstream got the innermost sidecar's span as its parent
    seen = dict(kv.split("=", 1) for kv in r.text.splitlines()[1].split(";") if "=" in kv)
    assert seen["traceparent"] == f"00-{TRACE:032x}-{web.span_id.hex()}-01"
    attrs = {a.key: (a.value.string_value or a.value.int_value) for a in web.attributes}
    assert attrs["sofamesh.response_code"] == 200 and attrs["sofamesh.upstream_cluster"] == "web"


def test_istio_requests_are_exported_as_otlp_metrics(
        otlp: OtlpReceiver, upstream: UpstreamServer, proxy_factory: Callable[..., ProxyProcess]) -> None:
    cfg, port = http_proxy_config([upstream.address], filters=[{"type": "telemetry", "config": {
        "workload": "otlp-web", "otlp": {"endpoint": otlp.address, "interval_ms": 300}}}])
    proxy_factory(cfg)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        for i in range(6):
            c.get(f"/m/{i}")

    def six() -> list[tuple[dict[str, str], float]]:
        return [p for p in otlp.metric_points("istio_requests")
                if p[0].get("destination_workload") == "otlp-web" and p[1] == 6.0]

    labels, _ = otlp.wait_for(six)[-1]
    assert labels["response_code"] == "200" and labels["request_protocol"] == "http1"
