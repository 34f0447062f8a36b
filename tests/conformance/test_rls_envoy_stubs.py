"""sofamesh's RLS v3 messages against Envoy's own generated stubs (PyPI xds-protos), and the
xds-protos / opentelemetry-proto clash resolved: Envoy's protos and OpenTelemetry's load in one
process, and there the OTLP exporters still deliver spans and metrics to a real OTLP receiver
(scripts/reinstall-otel-proto.sh runs after install)."""

from __future__ import annotations

from google.protobuf import json_format

from sofamesh.plugins.filters.quota import rls_proto as pb
from tests.integration.otlp_receiver import OtlpReceiver


def test_our_request_decodes_with_envoy_stubs_and_their_response_decodes_with_ours() -> None:
    from envoy.service.ratelimit.v3 import rls_pb2

    req = pb.RateLimitRequest(domain="shop", hits_addend=2)
    d = req.descriptors.add()
    d.entries.add(key="user", value="ann")
    d.entries.add(key="path", value="/cart")
    d.hits_addend.value = 5
    d.limit.requests_per_unit = 9
    d.limit.unit = 2
    req.descriptors.add().entries.add(key="generic_key", value="all")
    theirs = rls_pb2.RateLimitRequest.FromString(req.SerializeToString())
    assert json_format.MessageToDict(theirs) == {
        "domain": "shop", "hitsAddend": 2,
        "descriptors": [
            {"entries": [{"key": "user", "value": "ann"}, {"key": "path", "value": "/cart"}],
             "hitsAddend": "5", "limit": {"requestsPerUnit": 9, "unit": "MINUTE"}},
            {"entries": [{"key": "generic_key", "value": "all"}]}]}

    resp = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OVER_LIMIT)
    st = resp.statuses.add(code=rls_pb2.RateLimitResponse.OVER_LIMIT, limit_remaining=0)
    st.current_limit.requests_per_unit = 7
    st.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.MINUTE
    st.current_limit.name = "per-user"
    st.duration_until_reset.seconds = 42
    resp.statuses.add(code=rls_pb2.RateLimitResponse.OK, limit_remaining=3)
    ours = pb.RateLimitResponse.FromString(resp.SerializeToString())
    assert ours.overall_code == pb.OVER_LIMIT
    first, second = ours.statuses
    assert (first.code, first.limit_remaining, first.duration_until_reset.seconds) == (pb.OVER_LIMIT, 0, 42)
    assert (first.current_limit.requests_per_unit, first.current_limit.unit, first.current_limit.name) == (
        7, pb.UNIT_NUMBER["minute"], "per-user")
    assert (second.code, second.limit_remaining) == (pb.OK, 3)
    assert ours.SerializeToString() == resp.SerializeToString()


def test_envoy_and_opentelemetry_protos_load_in_one_process_and_the_otlp_exporters_deliver() -> None:
    from envoy.config.trace.v3 import opentelemetry_pb2 as envoy_otel_trace
    from envoy.service.ratelimit.v3 import rls_pb2
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    spans = ResourceSpans()
    spans.scope_spans.add(scope=InstrumentationScope(name="sofamesh", version="1")).spans.add(
        name="rpc", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    assert ResourceSpans.FromString(spans.SerializeToString()).scope_spans[0].scope.name == "sofamesh"
    assert rls_pb2.RateLimitRequest(domain="d").domain == "d"
    assert envoy_otel_trace.OpenTelemetryConfig(service_name="s").service_name == "s"

    # With Envoy's protos loaded, both exporters still encode and send over gRPC to a real receiver.
    resource = Resource.create({"service.name": "stubs-test"})
    with OtlpReceiver() as receiver:
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.address,
                                                                                insecure=True, timeout=5)))
        with tracer_provider.get_tracer("sofamesh").start_as_current_span("rpc"):
            pass
        tracer_provider.shutdown()
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=receiver.address, insecure=True,
                                                                  timeout=5), export_interval_millis=60_000)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter_provider.get_meter("sofamesh").create_counter("stubs_calls").add(3, {"route": "r"})
        meter_provider.shutdown(10_000)  # collects and exports once
        assert [(svc, span.name) for svc, span in receiver.spans()] == [("stubs-test", "rpc")]
        assert receiver.metric_points("stubs_calls") == [({"route": "r"}, 3.0)]
