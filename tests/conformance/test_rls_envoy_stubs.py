"""sofamesh's RLS v3 messages against Envoy's own generated stubs (PyPI xds-protos, in the venv
scripts/setup.d/41-xds-protos.sh makes), and the OpenTelemetry protos in the same process as ours."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sofamesh.plugins.filters.quota import rls_proto as pb

ROOT = Path(__file__).resolve().parents[2]
XDS_PY = Path(os.environ.get("SOFAMESH_CACHE", ROOT / ".cache")) / "venv-xds" / "bin" / "python"

ENVOY_SIDE = r"""
import json, sys
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format
req = rls_pb2.RateLimitRequest.FromString(bytes.fromhex(sys.argv[1]))
resp = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OVER_LIMIT)
st = resp.statuses.add(code=rls_pb2.RateLimitResponse.OVER_LIMIT, limit_remaining=0)
st.current_limit.requests_per_unit = 7
st.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.MINUTE
st.current_limit.name = "per-user"
st.duration_until_reset.seconds = 42
resp.statuses.add(code=rls_pb2.RateLimitResponse.OK, limit_remaining=3)
print(json.dumps({"request": json_format.MessageToDict(req), "response": resp.SerializeToString().hex()}))
"""


def _xds_python() -> Path:
    if not XDS_PY.exists():
        msg = f"{XDS_PY} missing (scripts/setup.d/41-xds-protos.sh installs Envoy's stubs)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return XDS_PY


def test_our_request_decodes_with_envoy_stubs_and_their_response_decodes_with_ours() -> None:
    req = pb.RateLimitRequest(domain="shop", hits_addend=2)
    d = req.descriptors.add()
    d.entries.add(key="user", value="ann")
    d.entries.add(key="path", value="/cart")
    d.hits_addend.value = 5
    d.limit.requests_per_unit = 9
    d.limit.unit = 2
    req.descriptors.add().entries.add(key="generic_key", value="all")
    out = subprocess.run([str(_xds_python()), "-c", ENVOY_SIDE, req.SerializeToString().hex()],
                         capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(out.stdout)
    assert data["request"] == {
        "domain": "shop", "hitsAddend": 2,
        "descriptors": [
            {"entries": [{"key": "user", "value": "ann"}, {"key": "path", "value": "/cart"}],
             "hitsAddend": "5", "limit": {"requestsPerUnit": 9, "unit": "MINUTE"}},
            {"entries": [{"key": "generic_key", "value": "all"}]}]}
    resp = pb.RateLimitResponse.FromString(bytes.fromhex(data["response"]))
    assert resp.overall_code == pb.OVER_LIMIT
    first, second = resp.statuses
    assert (first.code, first.limit_remaining, first.duration_until_reset.seconds) == (pb.OVER_LIMIT, 0, 42)
    assert (first.current_limit.requests_per_unit, first.current_limit.unit, first.current_limit.name) == (
        7, pb.UNIT_NUMBER["minute"], "per-user")
    assert (second.code, second.limit_remaining) == (pb.OK, 3)


def test_rls_messages_and_opentelemetry_protos_and_exporters_live_in_one_process() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    scope = InstrumentationScope(name="sofamesh", version="1")
    spans = ResourceSpans()
    spans.scope_spans.add(scope=scope).spans.add(name="rpc", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    assert ResourceSpans.FromString(spans.SerializeToString()).scope_spans[0].scope.name == "sofamesh"
    req = pb.RateLimitRequest(domain="d")
    req.descriptors.add().entries.add(key="k", value="v")
    assert pb.RateLimitRequest.FromString(req.SerializeToString()).descriptors[0].entries[0].value == "v"
    assert OTLPSpanExporter is not None and OTLPMetricExporter is not None
    # our descriptors live in a private pool: the default pool, which OpenTelemetry's generated
    # code (and xds-protos, if installed) fill, never sees a second registration of the RLS names
    from google.protobuf import descriptor_pool

    default = descriptor_pool.Default()
    assert pb.POOL is not default
    assert default.FindMessageTypeByName("opentelemetry.proto.trace.v1.ResourceSpans") is not None
