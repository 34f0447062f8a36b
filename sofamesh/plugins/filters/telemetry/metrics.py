"""Istio-standard request metrics kept as plain counters, exported through OpenTelemetry.

The hot path (``IstioMetrics.record``) builds one label tuple and bumps integers in a slotted
``Series``. At export time:

* ``istio_requests`` is an OpenTelemetry *observable* counter whose callback reads those integers;
  the SDK hands it to a Prometheus reader (a private ``prometheus_client`` registry, shown on the
  admin's ``/stats/prometheus`` as ``istio_requests_total``) and, when configured, to an OTLP/gRPC
  exporter on a period.
* ``istio_request_duration_milliseconds``, ``istio_request_bytes`` and ``istio_response_bytes`` are
  histograms. OpenTelemetry has no observable histogram (a synchronous one would cost a lock and an
  attribute lookup per request), so they are rendered from the same plain counters as Prometheus
  text next to the SDK's; over OTLP only their ``_sum`` / ``_count`` go out, as observable counters.

One hub per process: every ``telemetry`` filter (any listener, any config version) adds to it, so
counters continue across reloads. The first filter that configures OTLP sets the exporter.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("sofamesh.telemetry")

LABELS = ("reporter", "source_workload", "source_principal", "destination_workload", "destination_principal",
          "destination_service", "request_operation", "request_protocol", "response_code",
          "response_flags")
DURATION_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                                          60000, 300000)


class Series:
    __slots__ = ("buckets", "dur_sum", "req_bytes", "requests", "resp_bytes")

    def __init__(self) -> None:
        self.requests = 0
        self.req_bytes = 0
        self.resp_bytes = 0
        self.dur_sum = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class IstioMetrics:
    """The process-wide table of series and its OpenTelemetry export."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, ...], Series] = {}
        self._lock = threading.Lock()
        self._provider: Any = None
        self._registry: Any = None
        self._deferred: str | None = None  # service name of a Prometheus-only export not started yet
        self.otlp_endpoint: str | None = None

    # -- hot path -------------------------------------------------------------------------------
    def record(self, labels: tuple[str, ...], ms: float, req_bytes: int, resp_bytes: int) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = Series()
        s.requests += 1
        s.req_bytes += req_bytes
        s.resp_bytes += resp_bytes
        s.dur_sum += ms
        s.buckets[bisect_left(DURATION_BUCKETS_MS, ms)] += 1

    # -- export ---------------------------------------------------------------------------------
    def _items(self) -> list[tuple[tuple[str, ...], Series]]:
        return list(self.series.items())  # one C-level copy: safe against inserts from the loop thread

    def start_export(self, service_name: str, otlp_endpoint: str | None, interval_ms: int) -> None:
        """Create the SDK pipeline once per process (later calls with another endpoint are logged).
        Without an OTLP endpoint nothing reads it before the first scrape, which starts it: a proxy
        never scraped does not carry the SDK and prometheus_client (about 3 MB of RSS)."""
        with self._lock:
            if self._provider is None and not otlp_endpoint:
                self._deferred = service_name
                return
            self._start(service_name, otlp_endpoint, interval_ms)

    def _start(self, service_name: str, otlp_endpoint: str | None, interval_ms: int) -> None:
        """Called with ``self._lock`` held."""
        if self._provider is not None:
            if otlp_endpoint and otlp_endpoint != self.otlp_endpoint:
                log.warning("telemetry: OTLP already exports to %s; %s is ignored", self.otlp_endpoint,
                            otlp_endpoint)
            return
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from prometheus_client import CollectorRegistry

        self._registry = CollectorRegistry(auto_describe=True)
        readers: list[Any] = [PrometheusMetricReader(disable_target_info=True, registry=self._registry)]
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp_endpoint, insecure=True), export_interval_millis=interval_ms))
            self.otlp_endpoint = otlp_endpoint
        provider = MeterProvider(metric_readers=readers,
                                 resource=Resource.create({"service.name": service_name}))
        meter = provider.get_meter("sofamesh.telemetry")

        def observe(field: str) -> Any:
            def callback(_options: CallbackOptions) -> Iterable[Observation]:
                for labels, s in self._items():
                    yield Observation(getattr(s, field), dict(zip(LABELS, labels, strict=True)))

            return callback

        meter.create_observable_counter("istio_requests", [observe("requests")], description="Requests served")
        if otlp_endpoint:
            meter.create_observable_counter("istio_request_duration_milliseconds_sum", [observe("dur_sum")],
                                            unit="ms")
            meter.create_observable_counter("istio_request_bytes_sum", [observe("req_bytes")], unit="By")
            meter.create_observable_counter("istio_response_bytes_sum", [observe("resp_bytes")], unit="By")
        self._provider = provider

    def prometheus_text(self) -> str:
        """The SDK's exposition (``istio_requests_total``) plus the histograms rendered here."""
        out: list[str] = []
        if self._deferred is not None:
            with self._lock:
                if self._provider is None and self._deferred is not None:
                    self._start(self._deferred, None, 0)
                self._deferred = None
        if self._registry is not None:
            from prometheus_client import generate_latest

            out.append(generate_latest(self._registry).decode())
        items = self._items()
        dur = ["# HELP istio_request_duration_milliseconds Request duration",
               "# TYPE istio_request_duration_milliseconds histogram"]
        rq = ["# HELP istio_request_bytes Request sizes", "# TYPE istio_request_bytes histogram"]
        rs = ["# HELP istio_response_bytes Response sizes", "# TYPE istio_response_bytes histogram"]
        for labels, s in items:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in zip(LABELS, labels, strict=True))
            acc = 0
            for bound, n in zip((*DURATION_BUCKETS_MS, "+Inf"), s.buckets, strict=True):
                acc += n
                dur.append(f'istio_request_duration_milliseconds_bucket{{{lab},le="{bound}"}} {acc}')
            dur.append(f"istio_request_duration_milliseconds_sum{{{lab}}} {s.dur_sum:.3f}")
            dur.append(f"istio_request_duration_milliseconds_count{{{lab}}} {s.requests}")
            for lines, name, total in ((rq, "istio_request_bytes", s.req_bytes), (rs, "istio_response_bytes",
                                                                                   s.resp_bytes)):
                lines.append(f'{name}_bucket{{{lab},le="+Inf"}} {s.requests}')
                lines.append(f"{name}_sum{{{lab}}} {total}")
                lines.append(f"{name}_count{{{lab}}} {s.requests}")
        if items:
            out.append("\n".join([*dur, *rq, *rs]) + "\n")
        return "".join(out)

    def shutdown(self) -> None:
        with self._lock:
            if self._provider is not None:
                self._provider.shutdown()
                self._provider = None
                self._registry = None
            self._deferred = None


HUB = IstioMetrics()

__all__ = ["DURATION_BUCKETS_MS", "HUB", "LABELS", "IstioMetrics", "Series"]
