"""``telemetry``: Istio-standard metrics, JSON access logs, tracing and OpenTelemetry export, in the sidecar.

Per request, ``on_stream_done`` computes the label tuple and bumps plain counters in the
process-wide ``HUB`` (see ``metrics.py``) and, if configured, queues an access-log row. Export
(Prometheus text on the admin port, OTLP on a period, access-log writes) happens elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, Verdict
from sofamesh.plugins.filters.identity import principal_of
from sofamesh.plugins.filters.settings import Settings, parse
from sofamesh.plugins.filters.telemetry.access_log import DEFAULT_FIELDS, FIELDS, AccessLog
from sofamesh.plugins.filters.telemetry.metrics import HUB, IstioMetrics
from sofamesh.plugins.filters.telemetry.tracing import Tracer

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.events import ResponseHead
    from sofamesh.core.proxy.stream import Stream

_RESP_BYTES = "telemetry.response_bytes"


class OtlpSettings(Settings):
    endpoint: str  # host:port of an OTLP/gRPC receiver
    interval_ms: int = Field(default=5000, gt=0)


class AccessLogSettings(Settings):
    path: str = "-"  # a file, or "-" for stdout
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS))
    flush_ms: int = Field(default=200, gt=0)

    @field_validator("fields")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if f not in FIELDS]
        if bad:
            raise ValueError(f"unknown access-log field(s) {bad} (known: {', '.join(FIELDS)})")
        return v


class TracingSettings(Settings):
    endpoint: str  # host:port of an OTLP/gRPC receiver
    sampling: float = Field(default=1.0, ge=0, le=100)  # percent of new traces; a parent's decision wins
    flush_ms: int = Field(default=1000, gt=0)


class TelemetrySettings(Settings):
    reporter: Literal["destination", "source"] = "destination"
    workload: str = "unknown"  # this sidecar's workload name
    principal: str = "unknown"  # this sidecar's SPIFFE id
    service_name: str = "sofamesh"
    path_templates: list[str] = Field(default_factory=list)  # "/api/items/{id}" -> request_operation
    metrics: bool = True
    otlp: OtlpSettings | None = None
    access_log: AccessLogSettings | None = None
    tracing: TracingSettings | None = None


def _template(t: str) -> tuple[re.Pattern[str], str]:
    rx = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]*\})", t))
    return re.compile(rx), t


def _workload_of(principal: str) -> str:
    """The service-account name of ``<td>/ns/<ns>/sa/<sa>``; ``unknown`` without one."""
    i = principal.rfind("/sa/")
    return principal[i + 4:] if i >= 0 else "unknown"


_PEERS_MAX = 4096  # distinct peer identities whose source labels are remembered before the memo starts over
_CODES = {c: str(c) for c in range(100, 600)}  # response_code labels, made once


class TelemetryFilter(Filter):
    name = "telemetry"

    def __init__(self, settings: TelemetrySettings, hub: IstioMetrics = HUB) -> None:
        self.hub = hub
        self.destination = settings.reporter == "destination"
        self.reporter = settings.reporter
        self.workload = settings.workload
        self.principal = settings.principal
        self.templates = tuple(_template(t) for t in settings.path_templates)
        self.metrics = settings.metrics
        # peer identity -> the (workload, principal) labels of the source: a connection's requests share
        # one identity, so a request only looks it up
        self._sources: dict[str | None, tuple[str, str]] = {}
        tr = settings.tracing
        self.tracer = Tracer(settings.service_name, tr.endpoint, tr.sampling, tr.flush_ms,
                             inbound=self.destination) if tr else None
        al = settings.access_log
        self.access_log = AccessLog(al.path, tuple(al.fields), al.flush_ms) if al else None
        if settings.metrics:
            hub.start_export(settings.service_name, settings.otlp.endpoint if settings.otlp else None,
                             settings.otlp.interval_ms if settings.otlp else 5000)

    def on_response_head(self, stream: Stream, head: ResponseHead) -> None:
        if head.raw is not None:
            n = len(head.raw)
        else:
            cl = head.headers.get("content-length")
            n = int(cl) if cl and cl.isdigit() else 0
        stream.context.attrs[_RESP_BYTES] = n

    def _operation(self, stream: Stream) -> str:
        h = stream.head
        if h.raw is not None or (h.protocol == "http2" and h.path.count("/") == 2):
            return h.key("method") or "unknown"
        path = h.path.split("?", 1)[0]
        for rx, t in self.templates:
            if rx.fullmatch(path):
                return f"{h.method} {t}"
        return "unknown"

    def _source_labels(self, peer_identity: str | None) -> tuple[str, str]:
        who = self._sources.get(peer_identity)
        if who is None:
            if len(self._sources) >= _PEERS_MAX:
                self._sources.clear()
            who = self._sources[peer_identity] = (_workload_of(principal_of(peer_identity)),
                                                  peer_identity or "unknown")
        return who

    def on_stream_done(self, stream: Stream) -> None:
        if self.metrics:
            ctx = stream.context
            h = stream.head
            if self.destination:
                src_w, src_p = self._sources.get(ctx.peer_identity) or self._source_labels(ctx.peer_identity)
                dst_w, dst_p = self.workload, self.principal
            else:
                src_w, src_p = self.workload, self.principal
                dst_w, dst_p = ctx.cluster or "unknown", "unknown"
            raw = h.raw
            if raw is not None:
                rq = len(raw)
                op = h.method or h.key("method") or "unknown"
            else:
                cl = h.headers.get("content-length")
                rq = int(cl) if cl and cl.isdigit() else 0
                op = self._operation(stream)
            code = stream.http_status or 200
            labels = (self.reporter, src_w, src_p, dst_w, dst_p, h.service or "unknown", op, h.protocol,
                      _CODES.get(code) or str(code), ctx.response_flags or "-")
            ms = (stream.conn.loop.time() - ctx.start) * 1000.0
            self.hub.record(labels, ms, rq, ctx.attrs.get(_RESP_BYTES, 0))
        if self.access_log is not None:
            self.access_log.record(stream)
        if self.tracer is not None:
            self.tracer.finish(stream)

    def exposition(self) -> str:
        return self.hub.prometheus_text() if self.metrics else ""

    def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()


class TracingTelemetryFilter(TelemetryFilter):
    """With ``tracing`` configured: also starts a span (and propagates it) at the request head.
    A separate class so that telemetry without tracing adds no request-head hook to the chain."""

    def on_request_head(self, stream: Stream) -> FilterResult:
        assert self.tracer is not None
        self.tracer.start(stream)
        return Verdict.CONTINUE


class TelemetryFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        settings = parse(TelemetrySettings, config, path)
        return TracingTelemetryFilter(settings) if settings.tracing else TelemetryFilter(settings)


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("telemetry", TelemetryFilterFactory())


__all__ = ["TelemetryFilter", "TelemetryFilterFactory", "TelemetrySettings", "TracingTelemetryFilter"]
