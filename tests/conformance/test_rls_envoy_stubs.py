"""sofamesh's RLS v3 messages against Envoy's own generated stubs (PyPI xds-protos), and the
xds-protos / opentelemetry-proto clash resolved: Envoy's protos, OpenTelemetry's protos and the
OTLP exporters import and work in one process (scripts/reinstall-otel-proto.sh runs after install)."""

from __future__ import annotations

from google.protobuf import json_format

from sofamesh.plugins.filters.quota import rls_proto as pb


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


def test_envoy_and_opentelemetry_protos_and_the_otlp_exporters_import_in_one_process() -> None:
    from envoy.config.trace.v3 import opentelemetry_pb2 as envoy_otel_trace
    from envoy.service.ratelimit.v3 import rls_pb2
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    spans = ResourceSpans()
    spans.scope_spans.add(scope=InstrumentationScope(name="sofamesh", version="1")).spans.add(
        name="rpc", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    assert ResourceSpans.FromString(spans.SerializeToString()).scope_spans[0].scope.name == "sofamesh"
    assert rls_pb2.RateLimitRequest(domain="d").domain == "d"
    assert envoy_otel_trace.OpenTelemetryConfig(service_name="s").service_name == "s"
    assert OTLPSpanExporter is not None and OTLPMetricExporter is not None
