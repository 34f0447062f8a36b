"""The VirtualService annotation ``sofamesh.io/transcoders``: refused at admission naming the field,
and translated into optional per-filter config of the routes it names."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import json_format
from xds.type.v3 import typed_struct_pb2

from sofamesh.core.xds.route_actions import route_actions
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.transcoders import ANNOTATION, transcoders_of
from sofamesh.pilot.policy.validate import validate

CONFIG = {
    "protocol": "dubbo",
    "interface": "com.example.Calc",
    "method": "add",
    "arguments": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
}


def _vs(annotation: str) -> dict[str, Any]:
    return yaml.safe_load(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: web, annotations: {{{ANNOTATION}: {json.dumps(annotation)}}}}}\n"
        "spec:\n  hosts: [web]\n  http:\n  - name: api\n    route: [{destination: {host: web}}]\n"
    )


@pytest.mark.parametrize(
    ("annotation", "path", "message"),
    [
        ("{nope: {type: transcoder, config: {}}}", ".nope", "no http route named 'nope' (named routes: api)"),
        (
            "{api: {type: cors, config: {}}}",
            ".api.type",
            "expected one of transcoder, grpc_json_transcoder, got 'cors'",
        ),
        ("{api: {type: transcoder}}", ".api.config", "required: the filter's config, a mapping"),
        ("{api: {type: transcoder, config: {}, extra: 1}}", ".api.extra", 'unknown field (known: "type", "config")'),
        ("[1, 2]", "", "a mapping from http route names to {type, config}"),
        ("{api: [", "", "not YAML or JSON: "),
    ],
)
def test_a_bad_annotation_is_refused_at_admission_naming_the_field(annotation: str, path: str, message: str) -> None:
    verdict = validate(_vs(annotation), Source("t"))
    assert not verdict.accepted
    [issue] = verdict.errors
    assert issue.path == f"metadata.annotations[{ANNOTATION}]{path}"
    assert issue.message.startswith(message), issue.message


def test_an_admitted_annotation_becomes_an_optional_filter_config_the_sidecar_reads() -> None:
    from sofamesh.pilot.xds.virtual_services import _route_filter

    verdict = validate(_vs(json.dumps({"api": {"type": "transcoder", "config": CONFIG}})), Source("t"))
    assert verdict.accepted and verdict.resource is not None
    entry = transcoders_of(verdict.resource.annotations)["api"]
    packed = _route_filter(entry)
    fc = rc.FilterConfig()
    packed.Unpack(fc)
    assert fc.is_optional
    ts = typed_struct_pb2.TypedStruct()
    fc.config.Unpack(ts)
    assert ts.type_url == "type.googleapis.com/sofamesh.config.filter.v1.Filter"
    assert json_format.MessageToDict(ts.value)["type"] == "transcoder"
    # the sidecar's side: the route's own filter, numbers whole again
    route = rc.Route()
    route.route.cluster = "c"
    route.typed_per_filter_config["sofamesh.filters.http.transcoder"].CopyFrom(packed)
    out: dict[str, Any] = {}
    route_actions(route, "r", out)
    assert out["filters"] == [{"type": "transcoder", "config": CONFIG}]
