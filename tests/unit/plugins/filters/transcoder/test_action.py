"""The ``transcoder`` route filter's config: refused at load (and by ``sofamesh check-config``) with
errors naming the YAML path; and the JSON answers it makes of requests that cannot become a call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sofamesh.core.build import build_runtime, proxy_host
from sofamesh.core.codec import ReplyStatus
from sofamesh.core.config.check import check_mapping
from sofamesh.core.config.loader import from_mapping
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.events import RequestHead
from sofamesh.core.headers import Headers
from sofamesh.core.hessian import HessianReader
from sofamesh.plugins.filters.transcoder.action import TranscoderFilterFactory
from sofamesh.plugins.protocols.dubbo import frames

PATH = "listeners[0].routes[0].filters[0]"
CALL = {"protocol": "dubbo", "interface": "com.example.Users", "method": "find"}


def _config(
    call: dict[str, Any], *, cluster_protocol: str | None = "dubbo", on_listener: bool = False
) -> dict[str, Any]:
    f = [{"type": "transcoder", "config": call}]
    route: dict[str, Any] = {"match": {"path": {"prefix": "/"}}, "cluster": "users"}
    listener: dict[str, Any] = {"name": "edge", "address": "127.0.0.1:1", "protocols": ["http1"], "routes": [route]}
    if on_listener:
        listener["filters"] = f
    else:
        route["filters"] = f
    cluster = {"name": "users", "endpoints": ["127.0.0.1:2"]}
    if cluster_protocol:
        cluster["protocol"] = cluster_protocol
    return {"listeners": [listener], "clusters": [cluster]}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            {**CALL, "arguments": [{"name": "id", "type": "lnog"}]},
            f"{PATH}.config.arguments[0].type: Value error, unknown Java type 'lnog'",
        ),
        (
            {**CALL, "arguments": [{"name": "id", "type": "java.lang.Strin"}]},
            f"{PATH}.config.arguments[0].type: Value error, unknown Java type 'java.lang.Strin'",
        ),
        ({"protocol": "dubbo", "interface": "com.example.Users"}, f"{PATH}.config.method: Field required"),
        ({**CALL, "protocol": "grpc"}, f"{PATH}.config.protocol: Input should be 'dubbo' or 'bolt'"),
        (
            {**CALL, "path": "/users/{id}", "arguments": [{"name": "name", "type": "int", "from": "path"}]},
            f"{PATH}.config: Value error, argument 'name' is from the path, but path '/users/{{id}}' has no {{name}}",
        ),
        (
            {**CALL, "arguments": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]},
            f"{PATH}.config: Value error, arguments: a named twice",
        ),
        ({**CALL, "dialect": "draft"}, f"{PATH}.config: Value error, dialect is for protocol bolt"),
        (
            {**CALL, "protocol": "bolt", "dialect": "draft", "arguments": [{"name": "m", "type": "java.util.TreeMap"}]},
            f"{PATH}.config: Value error, argument 'm': dialect draft cannot write a java.util.TreeMap",
        ),
        (
            {**CALL, "arguments": [{"name": "a", "type": "int", "key": "x"}]},
            f"{PATH}.config: Value error, argument 'a': key is for arguments from path, query or header",
        ),
        (
            {**CALL, "arguments": [{"name": "a", "type": "int", "from": "cookie"}]},
            f"{PATH}.config.arguments[0].from: Input should be 'body', 'path', 'query' or 'header'",
        ),
    ],
)
def test_a_bad_call_is_refused_at_load_naming_the_field(call: dict[str, Any], message: str) -> None:
    errors = [str(e) for e in check_mapping(_config(call), proxy_host())]
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_a_cluster_that_speaks_another_protocol_is_refused_by_check_config_and_at_load() -> None:
    data = _config({**CALL, "protocol": "bolt"})
    msg = f"{PATH}.config.protocol: the route's cluster 'users' speaks dubbo, but the transcoder builds bolt calls"
    assert [str(e) for e in check_mapping(data, proxy_host())] == [msg]
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ConfigError, match="speaks dubbo, but the transcoder builds bolt calls"):
            build_runtime(from_mapping(data), proxy_host(), loop)
        data = _config(CALL, on_listener=True)
        with pytest.raises((ConfigError, ConfigErrors), match="put it under a route's filters"):
            build_runtime(from_mapping(data), proxy_host(), loop)
    finally:
        loop.close()
    assert [str(e) for e in check_mapping(data, proxy_host())] == [
        "listeners[0].filters[0].type: 'transcoder' answers a route with an RPC call: put it under a route's filters"
    ]


def _filter(**extra: Any) -> Any:
    call = {
        **CALL,
        "arguments": [
            {"name": "id", "type": "long", "from": "path"},
            {"name": "tags", "type": "java.util.List"},
            {"name": "limit", "type": "java.lang.Integer", "from": "query"},
        ],
        "path": "/users/{id}",
        **extra,
    }
    return TranscoderFilterFactory().create(call, "f")


def _head(path: str, headers: list[tuple[str, str]] | None = None) -> RequestHead:
    return RequestHead("http1", 0, "example.com", "POST", path, headers=Headers(headers or []))


def test_an_argument_may_come_from_a_header_or_a_differently_named_key() -> None:
    call = {
        **CALL,
        "path": "/u/{user-id}",
        "arguments": [
            {"name": "id", "type": "long", "from": "path", "key": "user-id"},
            {"name": "tenant", "type": "java.lang.String", "from": "header", "key": "X-Tenant"},
            {"name": "limit", "type": "int", "from": "query", "key": "n"},
        ],
    }
    built = TranscoderFilterFactory().create(call, "f").request(_head("/u/7?n=3", [("x-tenant", "acme")]), b"")
    assert isinstance(built, RequestHead) and built.raw is not None
    head = frames.read_body_head(built.raw, frames.HEADER_LEN)
    r = HessianReader(built.raw, head.args_offset)
    assert (r.read(), r.read(), r.read()) == (7, "acme", 3)


def test_arguments_come_from_the_path_the_query_and_the_body() -> None:
    built = _filter(version="1.0.0", group="g").request(_head("/users/%37?limit=5"), b'{"tags": ["a"]}')
    assert isinstance(built, RequestHead) and built.raw is not None
    assert (built.protocol, built.service, built.method, built.version, built.group) == (
        "dubbo",
        "com.example.Users",
        "find",
        "1.0.0",
        "g",
    )
    head = frames.read_body_head(built.raw, frames.HEADER_LEN)
    assert head.parameter_types == "JLjava/util/List;Ljava/lang/Integer;"
    assert frames.read_attachments(built.raw, head, 64)["group"] == "g"


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/users/x", b"[[]]", 400, {"error": "bad_argument", "argument": "id", "type": "long"}),
        ("/users/1?limit=many", b"[[]]", 400, {"error": "bad_argument", "argument": "limit"}),
        ("/users/1", b"[[], 2]", 400, {"error": "bad_body"}),
        ("/users/1", b"{", 400, {"error": "bad_body"}),
        ("/users/1", b'"tags"', 400, {"error": "bad_body"}),
        ("/users/1/more", b"[[]]", 404, {"error": "no_route"}),
    ],
)
def test_a_request_that_cannot_become_the_call_is_answered_with_json(
    path: str, body: bytes, status: int, expected: dict[str, str]
) -> None:
    built = _filter().request(_head(path), body)
    assert isinstance(built, tuple) and built[0] == status
    answer = json.loads(built[1])
    assert {k: answer[k] for k in expected} == expected and answer["status"] == status


def test_the_proxys_own_errors_are_json_with_their_http_status() -> None:
    status, body = _filter().error(_head("/users/1"), ReplyStatus.TIMEOUT, "upstream request timeout after 5 ms")
    assert (status, json.loads(body)) == (
        504,
        {"status": 504, "error": "timeout", "message": "upstream request timeout after 5 ms"},
    )


def test_a_provider_gone_mid_call_is_a_503_as_envoy_answers_a_reset_before_headers() -> None:
    status, body = _filter().error(_head("/users/1"), ReplyStatus.UPSTREAM_RESET, "upstream reset")
    assert (status, json.loads(body)["error"]) == (503, "upstream_reset")


@pytest.mark.parametrize(("timeout_ms", "on_the_wire"), [(1234, 1234), (0, -1)])
def test_a_bolt_frame_carries_the_calls_timeout(timeout_ms: int, on_the_wire: int) -> None:
    from sofamesh.plugins.protocols.bolt import frames as bolt_frames

    f = TranscoderFilterFactory().create(
        {"protocol": "bolt", "interface": "com.example.Users", "method": "find", "arguments": []}, "f"
    )
    built = f.request(_head("/users"), b"", timeout_ms)
    assert isinstance(built, RequestHead) and built.raw is not None
    assert bolt_frames.V1_REQUEST.unpack_from(built.raw)[6] == on_the_wire


@pytest.mark.parametrize(("timeout_ms", "attachment"), [(1234, "1234"), (0, None)])
def test_a_dubbo_call_carries_the_calls_timeout_as_its_timeout_attachment(
    timeout_ms: int, attachment: str | None
) -> None:
    from sofamesh.plugins.protocols.dubbo import frames as dubbo_frames

    f = TranscoderFilterFactory().create(
        {"protocol": "dubbo", "interface": "com.example.Users", "method": "find", "arguments": []}, "f"
    )
    built = f.request(_head("/users"), b"", timeout_ms)
    assert isinstance(built, RequestHead) and built.raw is not None
    body = dubbo_frames.read_body_head(built.raw, dubbo_frames.HEADER_LEN)
    assert dubbo_frames.read_attachments(built.raw, body, 64).get("timeout") == attachment


@pytest.mark.parametrize("protocol", ["dubbo", "bolt"])
def test_arguments_without_types_make_a_generic_call_and_mixed_ones_are_refused(protocol: str) -> None:
    from sofamesh.plugins.protocols.bolt import frames as bolt_frames
    from sofamesh.plugins.protocols.dubbo import frames as dubbo_frames

    config = {"protocol": protocol, "interface": "com.example.Users", "method": "find"}
    f = TranscoderFilterFactory().create({**config, "arguments": [{"name": "q"}, {"name": "n"}]}, "f")
    built = f.request(_head("/users"), b'["x", 3]', 1000)
    assert isinstance(built, RequestHead) and built.raw is not None
    if protocol == "dubbo":
        body = dubbo_frames.read_body_head(built.raw, dubbo_frames.HEADER_LEN)
        assert (body.method, dubbo_frames.read_attachments(built.raw, body, 64)["generic"]) == ("$invoke", "true")
    else:
        header = bolt_frames.V1_REQUEST.unpack_from(built.raw)
        assert b"sofa_head_generic_type" in built.raw[bolt_frames.V1_REQUEST.size :][: header[-3] + header[-2]]
    with pytest.raises(ConfigError, match="n without a type: declare every type, or none for a generic call"):
        TranscoderFilterFactory().create(
            {**config, "arguments": [{"name": "q", "type": "java.lang.String"}, {"name": "n"}]}, "f"
        )
