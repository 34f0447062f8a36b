"""Dubbo calls built from JSON by the transcoder, answered by a real @dubbo.ts provider (hessian.js
decodes our arguments, the provider's answers are read back as JSON)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sofamesh.core.hessian import HessianReader
from sofamesh.plugins.filters.transcoder import ArgumentError, to_json
from sofamesh.plugins.filters.transcoder.dubbo_call import (
    GENERIC_DESCRIPTOR,
    dubbo_request,
    read_dubbo_response,
)
from sofamesh.plugins.filters.transcoder.result import RpcResult
from sofamesh.plugins.protocols.dubbo import frames
from tests.conformance.dubbo_peers import SERVICE, Provider, require_dubbo_peers
from tests.conformance.rpc_exchange import exchange


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    require_dubbo_peers()
    with Provider("p1") as p:
        yield p


def _dubbo_length(data: bytes) -> int | None:
    return frames.HEADER_LEN + frames.parse_header(data).body_len if len(data) >= frames.HEADER_LEN else None


def _call(provider: Provider, frame: bytes) -> RpcResult:
    return read_dubbo_response(exchange(provider.port, frame, _dubbo_length))


def test_json_arguments_of_every_kind_reach_the_provider_and_come_back_as_json(provider: Provider) -> None:
    cases = [
        ("echo", [("s", "héllo 😀 " + "x" * 40)], ["java.lang.String"], "héllo 😀 " + "x" * 40),
        ("add", [("a", 2), ("b", "40")], ["int", "java.lang.Integer"], 42),
        (
            "greet",
            [("person", {"name": "ann", "n": 5})],
            ["com.sofamesh.demo.Person"],
            {"greeting": "hello ann", "name": "ann", "n": 5},
        ),
        (
            "greet",
            [("m", {"name": "bob", "n": 3})],
            ["java.util.Map"],
            {"greeting": "hello bob", "name": "bob", "n": 3},
        ),
        ("concat", [("list", ["a", "b", "c"]), ("sep", "-")], ["java.util.List", "java.lang.String"], "a-b-c"),
        ("nothing", [], [], None),
    ]
    for i, (method, args, types, expected) in enumerate(cases):
        frame = dubbo_request(i + 1, interface=SERVICE, version="1.0.0", method=method, args=args, java_types=types)
        result = _call(provider, frame)
        assert (result.exception, to_json(result.value)) == ("", expected), method


def test_a_provider_exception_names_its_class_and_message(provider: Provider) -> None:
    frame = dubbo_request(9, interface=SERVICE, method="fail", args=[("msg", "boom")], java_types=["java.lang.String"])
    result = _call(provider, frame)
    assert result.status == frames.STATUS_SERVICE_ERROR
    assert (result.exception, result.message) == ("ServiceError", "p1: boom")


def test_a_generic_call_carries_the_method_and_untyped_arguments(provider: Provider) -> None:
    frame = dubbo_request(10, interface=SERVICE, method="greet", args=[("p", {"name": "x"})], java_types=None)
    head = frames.read_body_head(frame, frames.HEADER_LEN)
    assert (head.parameter_types, frames.read_attachments(frame, head, 64)["generic"]) == (GENERIC_DESCRIPTOR, "true")
    r = HessianReader(frame, head.args_offset)
    assert (r.read(), r.read(), to_json(r.read())) == ("greet", None, [{"name": "x"}])
    # the provider answers it as Dubbo's GenericFilter does: the named method with the arguments
    result = _call(provider, frame)
    assert (result.exception, to_json(result.value)) == ("", {"greeting": "hello x", "name": "x", "n": None})
    # without generic=true, $invoke is a method the service does not have
    plain = frame.replace(b"\x04true", b"\x05false")
    plain = plain[:12] + (int.from_bytes(plain[12:16], "big") + 1).to_bytes(4, "big") + plain[16:]
    result = _call(provider, plain)
    assert result.exception == "ServiceNotFound" and "$invoke" in result.message


def test_a_bad_argument_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ArgumentError, match="argument 'b': expected int, found string 'forty'"):
        dubbo_request(1, interface=SERVICE, method="add", args=[("a", 1), ("b", "forty")], java_types=["int", "int"])
