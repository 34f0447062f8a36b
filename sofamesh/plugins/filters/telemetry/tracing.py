"""Distributed tracing for the ``telemetry`` filter, with the OpenTelemetry SDK.

Where the parent comes from, per protocol:

* HTTP / gRPC: the W3C ``traceparent`` header. The proxy's span becomes the parent of the upstream
  request: its ``traceparent`` is rewritten (re-encoded heads only).
* Bolt: the SOFA tracer keys ``rpc_trace_context.sofaTraceId`` / ``rpc_trace_context.sofaRpcId`` in
  the header map (also ``sofa_head_trace_id``). SOFA ids are not W3C ids, so both are mapped to
  OTel ids by a stable hash: every sidecar on the path derives the same trace and parent ids and
  their spans join one trace. Bolt frames are forwarded untouched, so nothing is injected.
* Dubbo: a ``traceparent`` attachment (as OpenTelemetry's Dubbo instrumentation sends), read only.

Sampling: a parent's sampled flag is followed; a new trace is sampled with ``sampling`` percent.
Only sampled requests create a span, so the cost of an unsampled request is a header lookup and a
random number. Spans go out through a ``BatchSpanProcessor`` to an OTLP/gRPC endpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from typing import TYPE_CHECKING, Any

from sofamesh.plugins.filters.identity import source_ip

if TYPE_CHECKING:
    from sofamesh.core.proxy.stream import Stream

SPAN_ATTR = "telemetry.span"
SOFA_TRACE_ID = "rpc_trace_context.sofaTraceId"
SOFA_RPC_ID = "rpc_trace_context.sofaRpcId"


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """``00-<trace id>-<span id>-<flags>`` -> (trace id, span id, sampled); None when malformed."""
    if not value or len(value) < 55:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        tid, sid, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not tid or not sid:
        return None
    return tid, sid, bool(flags & 1)


def _hashed(value: str, bits: int) -> int:
    return int.from_bytes(hashlib.sha256(value.encode()).digest()[: bits // 8], "big") or 1


class Tracing:
    """One process-wide tracer provider; filters share it."""

    _lock = threading.Lock()
    _provider: Any = None
    _tracer: Any = None
    endpoint = ""

    @classmethod
    def tracer(cls, service_name: str, endpoint: str, flush_ms: int) -> Any:
        with cls._lock:
            if cls._tracer is None:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
                provider.add_span_processor(BatchSpanProcessor(
                    OTLPSpanExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=flush_ms))
                cls._provider, cls._tracer, cls.endpoint = provider, provider.get_tracer("sofamesh"), endpoint
            return cls._tracer


class Tracer:
    __slots__ = ("inbound", "rand", "sampling", "tracer")

    def __init__(self, service_name: str, endpoint: str, sampling: float, flush_ms: int, inbound: bool) -> None:
        self.tracer = Tracing.tracer(service_name, endpoint, flush_ms)
        self.sampling = sampling / 100.0
        self.rand = random.random
        self.inbound = inbound

    def _parent(self, stream: Stream) -> tuple[int, int, bool] | None:
        h = stream.head
        if h.protocol == "bolt":
            tid = h.key(SOFA_TRACE_ID) or h.key("sofa_head_trace_id")
            if not tid:
                return None
            rpc = h.key(SOFA_RPC_ID) or "0"
            return _hashed(tid, 128), _hashed(f"{tid}/{rpc}", 64), True
        return parse_traceparent(h.key("traceparent"))

    def start(self, stream: Stream) -> None:
        parent = self._parent(stream)
        if parent is not None:
            if not parent[2]:
                return
        elif self.rand() >= self.sampling:
            return
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        ctx = None
        if parent is not None:
            sc = SpanContext(parent[0], parent[1], is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
            ctx = trace.set_span_in_context(NonRecordingSpan(sc))
        h = stream.head
        if h.raw is not None or (h.path and h.path == f"/{h.service}/{h.method}"):  # RPC, gRPC / Triple included
            name = f"{h.service}/{h.key('method') or ''}"
        else:
            name = f"{h.method} {h.path.split('?', 1)[0]}"
        span = self.tracer.start_span(name, context=ctx, kind=SpanKind.SERVER if self.inbound else SpanKind.CLIENT)
        stream.context.attrs[SPAN_ATTR] = span
        if h.raw is None:
            sc = span.get_span_context()
            tp = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-01"
            stream.head = dataclasses.replace(h, headers=h.headers.with_set("traceparent", tp))

    @staticmethod
    def finish(stream: Stream) -> None:
        span = stream.context.attrs.get(SPAN_ATTR)
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        ctx = stream.context
        h = stream.head
        code = stream.http_status or 200
        span.set_attribute("rpc.system" if h.raw is not None else "network.protocol.name", h.protocol)
        span.set_attribute("sofamesh.service", h.service)
        span.set_attribute("sofamesh.response_code", code)
        span.set_attribute("sofamesh.response_flags", ctx.response_flags or "-")
        span.set_attribute("sofamesh.upstream_cluster", ctx.cluster)
        span.set_attribute("client.address", source_ip(ctx))
        if ctx.peer_identity:
            span.set_attribute("sofamesh.peer_identity", ctx.peer_identity)
        if code >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


__all__ = ["SPAN_ATTR", "Tracer", "Tracing", "parse_traceparent"]
