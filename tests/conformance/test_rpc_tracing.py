"""Tracing through two sidecars with real RPC peers, span counts and parent ids asserted exactly.

- Bolt: anthunder client (rpc_trace_context.sofaTraceId / sofaRpcId in the header map) -> sidecar
  "shop" -> sidecar "py" -> anthunder listener. Bolt frames pass untouched, so both sidecars derive
  their parent from the same SOFA ids: their spans land in the trace the client sent, under the
  caller's span.
- Dubbo: dubbo2.js with a W3C ``traceparent`` attachment -> two sidecars -> @dubbo.ts provider.
  Attachments are read, never rewritten: both spans are children of the caller's span.
- gRPC (HTTP/2): grpcio with ``traceparent`` metadata -> two sidecars -> grpcio server. Each sidecar
  rewrites ``traceparent``: the inner span is the outer one's child.

The OTLP receiver is the project's own (tests/integration/otlp_receiver.py, opentelemetry-proto's
services): no collector binary exists here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from sofamesh.testing import ProxyProcess, free_port
from tests.conformance import dubbo_peers
from tests.conformance.bolt_peers import anthunder_client, anthunder_listener
from tests.integration.otlp_receiver import OtlpReceiver

PY = "com.example.Py"
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE:032x}-{CLIENT_SPAN:016x}-01"


def two_sidecars(protocol: str, upstream: str, call: Callable[[str], Any]) -> tuple[Any, dict[str, Any]]:
    """``call(outer sidecar address)`` through sidecars "outer" -> "inner" -> ``upstream``; returns
    what it returned and the spans by service, once exactly two arrived (and no third came)."""
    with OtlpReceiver() as otlp:
        inner_cfg, inner = _sidecar("inner", upstream, otlp.address, protocol)
        outer_cfg, outer = _sidecar("outer", inner, otlp.address, protocol)
        with ProxyProcess(inner_cfg), ProxyProcess(outer_cfg):
            result = call(outer)
            otlp.wait_for(lambda: len(otlp.spans()) >= 2)
            time.sleep(0.5)  # longer than flush_ms: a third span would have arrived
            spans = otlp.spans()
    assert sorted(svc for svc, _ in spans) == ["inner", "outer"], spans
    return result, dict(spans)


def _sidecar(name: str, upstream: str, otlp: str, protocol: str = "bolt") -> tuple[dict[str, object], str]:
    """A sidecar whose telemetry filter traces every request with a parent (sampling 0 % otherwise)."""
    port = free_port()
    return {
        "listeners": [{"name": "rpc", "address": f"127.0.0.1:{port}", "protocols": [protocol],
                       "filters": [{"type": "telemetry", "config": {
                           "service_name": name, "metrics": False,
                           "tracing": {"endpoint": otlp, "sampling": 0, "flush_ms": 100}}}],
                       "routes": [{"cluster": "next", "timeout_ms": 5000}]}],
        "clusters": [{"name": "next", "protocol": protocol, "endpoints": [upstream]}],
    }, f"127.0.0.1:{port}"


def test_sofa_trace_ids_put_both_sidecars_spans_in_one_trace_under_the_callers_span() -> None:
    trace_id, rpc_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "0.1"
    with OtlpReceiver() as otlp, anthunder_listener(PY, "B") as listener:
        inner_cfg, inner = _sidecar("py-sidecar", listener.address, otlp.address)
        outer_cfg, outer = _sidecar("shop-sidecar", inner, otlp.address)
        with ProxyProcess(inner_cfg), ProxyProcess(outer_cfg):
            # anthunder's tracer puts these ids in the header map as rpc_trace_context.* keys
            results = anthunder_client(outer, PY, [{"method": "echo", "body": "hi",
                                                    "trace": {"sofaTraceId": trace_id, "sofaRpcId": rpc_id}}])
            otlp.wait_for(lambda: len(otlp.spans()) >= 2)
            time.sleep(0.5)  # longer than flush_ms: a third span would have arrived
            spans = otlp.spans()
    assert results == [{"ok": True, "result": "B:hi"}]
    assert sorted(svc for svc, _ in spans) == ["py-sidecar", "shop-sidecar"]  # one span per sidecar
    by_service = dict(spans)
    shop, py = by_service["shop-sidecar"], by_service["py-sidecar"]
    # the trace is the one the SOFA client sent (its 32-hex SOFA id mapped to 128 bits by sha256),
    # and both spans are children of the client's span (trace id + rpc id)
    assert shop.trace_id == py.trace_id == hashlib.sha256(trace_id.encode()).digest()[:16]  # type: ignore[attr-defined]
    caller = hashlib.sha256(f"{trace_id}/{rpc_id}".encode()).digest()[:8]
    assert shop.parent_span_id == py.parent_span_id == caller  # type: ignore[attr-defined]
    assert shop.span_id != py.span_id  # type: ignore[attr-defined]
    assert shop.name == py.name == f"{PY}/echo"  # type: ignore[attr-defined]


def test_a_traceparent_attachment_from_dubbo2js_makes_both_sidecars_children_of_the_callers_span() -> None:
    dubbo_peers.require_dubbo_peers()
    with dubbo_peers.Provider("traced") as provider:
        results, spans = two_sidecars("dubbo", provider.address, lambda outer: dubbo_peers.consume(outer, [
            dubbo_peers.call("whoami", attachments={"traceparent": TRACEPARENT}),
            dubbo_peers.call("whoamiUntraced")]))  # no parent, sampling 0 %: no span
    traced, untraced = results
    assert traced["ok"] and untraced["ok"]
    assert traced["res"]["attachments"]["traceparent"] == TRACEPARENT  # read, not rewritten
    outer, inner = spans["outer"], spans["inner"]
    assert int.from_bytes(outer.trace_id, "big") == TRACE == int.from_bytes(inner.trace_id, "big")
    assert int.from_bytes(outer.parent_span_id, "big") == CLIENT_SPAN == int.from_bytes(inner.parent_span_id, "big")
    assert outer.span_id != inner.span_id
    assert outer.name == inner.name == f"{dubbo_peers.SERVICE}/whoami"


def test_grpc_traceparent_metadata_chains_the_sidecars_spans_under_the_callers_span() -> None:
    import sys

    import grpc

    from tests.conformance.test_http2_peers import ECHO, GRPC_SERVER, start_peer, stop_peer

    def unary(outer: str) -> list[bytes]:
        with grpc.insecure_channel(outer) as channel:
            call = channel.unary_unary(f"/{ECHO}/Unary")
            return [call(b"traced", metadata=(("traceparent", TRACEPARENT),), timeout=10),
                    call(b"untraced", timeout=10)]  # no parent, sampling 0 %: no span

    server = start_peer([sys.executable, str(GRPC_SERVER)])
    try:
        replies, spans = two_sidecars("http2", f"127.0.0.1:{server.port}", unary)
    finally:
        stop_peer(server)
    assert replies == [b"echo:traced", b"echo:untraced"]
    outer, inner = spans["outer"], spans["inner"]
    assert int.from_bytes(outer.trace_id, "big") == TRACE == int.from_bytes(inner.trace_id, "big")
    assert int.from_bytes(outer.parent_span_id, "big") == CLIENT_SPAN
    assert inner.parent_span_id == outer.span_id  # the outer sidecar rewrote traceparent
    assert outer.name == inner.name == f"{ECHO}/Unary"  # OpenTelemetry's RPC span name
