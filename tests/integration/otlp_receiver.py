"""An OTLP/gRPC receiver for tests, built from opentelemetry-proto's generated services.

No collector binary exists for this machine (COMPONENTS.md section 5): this is the real OTLP wire
protocol served by our own code, not the OpenTelemetry Collector. It keeps every export request.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: OtlpReceiver) -> None:
        self.sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        with self.sink.lock:
            self.sink.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: OtlpReceiver) -> None:
        self.sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        with self.sink.lock:
            self.sink.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.traces: list[Any] = []
        self.metrics: list[Any] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) for every span received."""
        out = []
        with self.lock:
            for req in self.traces:
                for rs in req.resource_spans:
                    svc = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
                    for ss in rs.scope_spans:
                        out.extend((svc, sp) for sp in ss.spans)
        return out

    def metric_points(self, name: str) -> list[tuple[dict[str, str], float]]:
        out = []
        with self.lock:
            for req in self.metrics:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            if m.name != name:
                                continue
                            for p in m.sum.data_points:
                                labels = {a.key: a.value.string_value for a in p.attributes}
                                out.append((labels, p.as_double or float(p.as_int)))
        return out

    def wait_for(self, check: Any, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError(f"the OTLP receiver got nothing matching in {timeout} s "
                             f"({len(self.traces)} trace and {len(self.metrics)} metric exports)")

    def __enter__(self) -> OtlpReceiver:
        self.server.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.server.stop(1).wait(3)
