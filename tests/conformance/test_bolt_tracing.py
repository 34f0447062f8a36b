"""Tracing with the SOFA tracer keys through two sidecars, with real anthunder peers.

anthunder client (rpc_trace_context.sofaTraceId / sofaRpcId in the header map) -> sidecar "shop"
-> sidecar "py" -> anthunder listener. Bolt frames pass untouched, so both sidecars derive their
parent from the same SOFA ids: their spans land in one trace, under the caller's span.
"""

from __future__ import annotations

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance.bolt_peers import anthunder_client, anthunder_listener
from tests.integration.otlp_receiver import OtlpReceiver

PY = "com.example.Py"


def _sidecar(name: str, upstream: str, otlp: str) -> tuple[dict[str, object], str]:
    port = free_port()
    return {
        "listeners": [{"name": "rpc", "address": f"127.0.0.1:{port}", "protocols": ["bolt"],
                       "filters": [{"type": "telemetry", "config": {
                           "service_name": name, "metrics": False,
                           "tracing": {"endpoint": otlp, "sampling": 0, "flush_ms": 100}}}],
                       "routes": [{"cluster": "next", "timeout_ms": 5000}]}],
        "clusters": [{"name": "next", "protocol": "bolt", "endpoints": [upstream]}],
    }, f"127.0.0.1:{port}"


def test_sofa_trace_ids_put_both_sidecars_spans_in_one_trace_under_the_callers_span() -> None:
    with OtlpReceiver() as otlp, anthunder_listener(PY, "B") as listener:
        inner_cfg, inner = _sidecar("py-sidecar", listener.address, otlp.address)
        outer_cfg, outer = _sidecar("shop-sidecar", inner, otlp.address)
        with ProxyProcess(inner_cfg), ProxyProcess(outer_cfg):
            # anthunder's tracer puts its own rpc_trace_context.* keys in every request's header map
            results = anthunder_client(outer, PY, [{"method": "echo", "body": "hi"}])

            def both() -> list[tuple[str, object]] | None:
                got = otlp.spans()
                return got if len(got) >= 2 else None

            spans = dict(otlp.wait_for(both))
    assert results == [{"ok": True, "result": "B:hi"}]
    assert set(spans) == {"shop-sidecar", "py-sidecar"}
    shop, py = spans["shop-sidecar"], spans["py-sidecar"]
    assert shop.trace_id == py.trace_id and any(shop.trace_id)  # type: ignore[attr-defined]
    assert shop.parent_span_id == py.parent_span_id and any(shop.parent_span_id)  # type: ignore[attr-defined]
    assert shop.span_id != py.span_id  # type: ignore[attr-defined]
    assert shop.name == py.name == f"{PY}/echo"  # type: ignore[attr-defined]
