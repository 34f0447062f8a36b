"""The ``grpc_json_transcoder`` route filter's config, refused with errors at their YAML path, and
the gRPC call it builds and the JSON it makes of answers (no sockets: the conformance test
``tests/conformance/test_grpc_json_transcoder.py`` drives a real grpcio server)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from sofamesh.core.build import proxy_host
from sofamesh.core.codec import ReplyStatus
from sofamesh.core.config.check import check_mapping
from sofamesh.core.events import RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.transcode import Call
from sofamesh.plugins.filters.transcoder.grpc_json import GrpcJsonTranscoder, GrpcJsonTranscoderFactory

PATH = "listeners[0].routes[0].filters[0]"


def _add_field(msg: Any, name: str, number: int, kind: int, json_name: str) -> None:
    msg.field.add(
        name=name,
        number=number,
        type=kind,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        json_name=json_name,
    )


def _descriptor_set(get: str = "/things/{id}", body: str = "") -> bytes:
    f = descriptor_pb2.FileDescriptorProto(name="things.proto", package="demo", syntax="proto3")
    req = f.message_type.add(name="GetThing")
    _add_field(req, "id", 1, descriptor_pb2.FieldDescriptorProto.TYPE_INT64, "id")
    _add_field(req, "dry_run", 2, descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, "dryRun")
    _add_field(f.message_type.add(name="Thing"), "id", 1, descriptor_pb2.FieldDescriptorProto.TYPE_INT64, "id")
    svc = f.service.add(name="Things")
    m = svc.method.add(name="Get", input_type=".demo.GetThing", output_type=".demo.Thing")
    m.options.Extensions[annotations_pb2.http].get = get
    m.options.Extensions[annotations_pb2.http].body = body
    svc.method.add(name="Other", input_type=".demo.GetThing", output_type=".demo.Thing")
    return descriptor_pb2.FileDescriptorSet(file=[f]).SerializeToString()


def _config(config: dict[str, Any], cluster_protocol: str = "http2") -> dict[str, Any]:
    route = {
        "match": {"path": {"prefix": "/"}},
        "cluster": "things",
        "filters": [{"type": "grpc_json_transcoder", "config": config}],
    }
    return {
        "listeners": [{"name": "edge", "address": "127.0.0.1:1", "protocols": ["http1"], "routes": [route]}],
        "clusters": [{"name": "things", "protocol": cluster_protocol, "endpoints": ["127.0.0.1:2"]}],
    }


def _bin(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"services": ["demo.Things"]}, f"{PATH}.config: Value error, give exactly one of proto_descriptor"),
        ({"proto_descriptor_bin": _bin(_descriptor_set()), "services": []}, f"{PATH}.config.services: List should"),
        (
            {"proto_descriptor_bin": _bin(_descriptor_set()), "services": ["demo.Things", "demo.Nope"]},
            f"{PATH}.config.services[1]: service 'demo.Nope' is not in the descriptor set (services there: demo.Things)",
        ),
        (
            {"proto_descriptor": "/no/such/file.pb", "services": ["demo.Things"]},
            f"{PATH}.config.proto_descriptor: cannot read '/no/such/file.pb'",
        ),
        (
            {"proto_descriptor_bin": "!!", "services": ["demo.Things"]},
            f"{PATH}.config.proto_descriptor_bin: not base64",
        ),
        (
            {"proto_descriptor_bin": _bin(b"\xff\xff"), "services": ["demo.Things"]},
            f"{PATH}.config.proto_descriptor_bin: not a serialized FileDescriptorSet",
        ),
        (
            {"proto_descriptor_bin": _bin(_descriptor_set("/things/{nope}")), "services": ["demo.Things"]},
            f"{PATH}.config.proto_descriptor_bin: demo.Things.Get: path variable 'nope': demo.GetThing has no such field",
        ),
        (
            {"proto_descriptor_bin": _bin(_descriptor_set("/things/{id")), "services": ["demo.Things"]},
            f"{PATH}.config.proto_descriptor_bin: demo.Things.Get: path template '/things/{{id': '{{' without '}}'",
        ),
        (
            {"proto_descriptor_bin": _bin(_descriptor_set(body="nope")), "services": ["demo.Things"]},
            f"{PATH}.config.proto_descriptor_bin: demo.Things.Get: body 'nope': demo.GetThing has no such field",
        ),
        (
            {
                "proto_descriptor_bin": _bin(_descriptor_set()),
                "services": ["demo.Things"],
                "print_options": {"add_whitespaces": True},
            },
            f"{PATH}.config.print_options.add_whitespaces: Extra inputs",
        ),
    ],
)
def test_a_bad_config_is_refused_at_its_yaml_path(config: dict[str, Any], message: str) -> None:
    errors = [str(e) for e in check_mapping(_config(config), proxy_host())]
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_a_descriptor_set_without_its_imports_names_the_missing_file() -> None:
    f = descriptor_pb2.FileDescriptorProto(name="a.proto", package="a", dependency=["google/api/annotations.proto"])
    data = descriptor_pb2.FileDescriptorSet(file=[f]).SerializeToString()
    errors = [
        str(e) for e in check_mapping(_config({"proto_descriptor_bin": _bin(data), "services": ["a.S"]}), proxy_host())
    ]
    assert errors == [
        f"{PATH}.config.proto_descriptor_bin: a.proto imports google/api/annotations.proto, which the "
        "descriptor set does not hold (build it with protoc --include_imports)"
    ]


def test_a_cluster_that_does_not_speak_http2_is_refused() -> None:
    config = {"proto_descriptor_bin": _bin(_descriptor_set()), "services": ["demo.Things"]}
    assert [str(e) for e in check_mapping(_config(config, "dubbo"), proxy_host())] == [
        f"{PATH}.config.protocol: the route's cluster 'things' speaks dubbo, but the transcoder builds http2 calls"
    ]


def _filter(tmp_path: Path | None = None, **extra: Any) -> GrpcJsonTranscoder:
    config: dict[str, Any] = {"services": ["demo.Things"], **extra}
    if tmp_path is not None:
        (tmp_path / "d.pb").write_bytes(_descriptor_set())
        config["proto_descriptor"] = str(tmp_path / "d.pb")
    else:
        config.setdefault("proto_descriptor_bin", _bin(_descriptor_set()))
    f = GrpcJsonTranscoderFactory().create(config, "f")
    assert isinstance(f, GrpcJsonTranscoder)
    return f


def _head(method: str, path: str, headers: list[tuple[str, str]] | None = None) -> RequestHead:
    return RequestHead("http1", 0, "example.com", method, path, headers=Headers(headers or []))


def test_a_matching_request_becomes_a_grpc_call_and_others_pass_through(tmp_path: Path) -> None:
    f = _filter(tmp_path)
    head = _head(
        "GET",
        "/things/42?dry_run=true",
        [("host", "example.com"), ("x-tag", "t"), ("content-length", "0"), ("accept-encoding", "gzip")],
    )
    assert f.takes(head)
    assert not f.takes(_head("POST", "/things/42"))  # no rule for POST
    assert not f.takes(_head("GET", "/other"))
    assert not f.takes(_head("GET", "/things/42", [("content-type", "application/grpc")]))
    call = f.request(head, b"")
    assert isinstance(call, Call)
    assert (call.head.protocol, call.head.service, call.head.method, call.head.end_stream) == (
        "http2",
        "demo.Things",
        "Get",
        False,
    )
    assert list(call.head.headers) == [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "example.com"),
        (":path", "/demo.Things/Get"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-envoy-original-path", "/things/42?dry_run=true"),
        ("x-tag", "t"),
    ]
    assert call.body == b"\x00\x00\x00\x00\x04" + b"\x08\x2a\x10\x01"  # id=42, dry_run=true, length-prefixed
    strict = _filter(request_validation_options={"reject_unknown_method": True})
    assert strict.takes(_head("GET", "/other"))
    assert strict.request(_head("GET", "/other"), b"") == (
        404,
        json.dumps({"code": 5, "message": "no gRPC method for GET /other"}).encode(),
    )


def test_answers_become_json_with_the_status_envoy_maps() -> None:
    f = _filter()
    http = _head("GET", "/things/7")
    grpc_ct = Headers([("content-type", "application/grpc")])
    ok = ResponseHead("http2", 1, 200, 200, grpc_ct, end_stream=False)
    assert f.response(http, ok, b"\x00\x00\x00\x00\x02\x08\x07", Headers([("grpc-status", "0")])) == (
        200,
        b'{"id":"7"}',
    )
    trailers_only = ResponseHead(
        "http2",
        1,
        200,
        404,
        Headers([("content-type", "application/grpc"), ("grpc-status", "5"), ("grpc-message", "no%20such")]),
    )
    assert f.response(http, trailers_only) == (
        404,
        b'{"code": 5, "message": "no such"}',
        [("grpc-status", "5"), ("grpc-message", "no%20such")],
    )
    status, body, *_ = f.response(http, ok, b"", Headers([]))
    assert (status, json.loads(body)["code"]) == (503, 14)  # no grpc-status: Envoy's 503
    status, body, *_ = f.response(http, ok, b"\x01\x00\x00\x00\x00", Headers([("grpc-status", "0")]))
    assert status == 502 and "compressed" in json.loads(body)["message"]
    plain = ResponseHead("http2", 1, 404, 404, Headers([("content-type", "text/plain")]))
    assert f.response(http, plain)[0] == 404
    assert f.error(http, ReplyStatus.NO_HEALTHY_UPSTREAM, "no healthy endpoint") == (
        503,
        b'{"code": 14, "message": "no healthy endpoint"}',
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "dryRun", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    body=_JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=20),
    segment=st.text(min_size=1, max_size=6).map(lambda t: quote(t, safe="")),
    query=st.lists(
        st.tuples(st.sampled_from(["id", "dry_run", "dryRun", "nope", "id.x"]), st.text(max_size=5)), max_size=3
    ),
)
def test_any_request_becomes_a_call_or_a_json_answer_never_an_exception(
    body: bytes, segment: str, query: list[tuple[str, str]]
) -> None:
    f = _FILTERS.setdefault(
        "star", _filter(proto_descriptor_bin=_bin(_descriptor_set(body="*")), ignore_unknown_query_parameters=False)
    )
    path = f"/things/{segment}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
    built = f.request(_head("GET", path), body)
    if isinstance(built, tuple):
        status, payload = built[0], json.loads(built[1])
        assert status in (400, 404) and payload["code"] in (3, 5), built
    else:
        assert isinstance(built, Call)


_FILTERS: dict[str, GrpcJsonTranscoder] = {}


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=30), status=st.sampled_from(["0", "3", "", "x", "99"]))
def test_any_answer_becomes_json_never_an_exception(body: bytes, status: str) -> None:
    f = _FILTERS.setdefault("plain", _filter())
    ok = ResponseHead("http2", 1, 200, 200, Headers([("content-type", "application/grpc")]), end_stream=False)
    reply = f.response(_head("GET", "/things/7"), ok, body, Headers([("grpc-status", status)] if status else []))
    assert reply[0] in (200, 400, 500, 502, 503)
    if reply[0] != 200:
        assert "code" in json.loads(reply[1])
