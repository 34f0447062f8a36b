"""Bolt SofaRequests built from JSON by the transcoder, answered by a real sofa-rpc-node provider
(which reads only the draft Hessian encoding); and the Hessian 2.0 form SOFARPC Java reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sofamesh.core.hessian import HessianReader, JavaObject, TypedList
from sofamesh.plugins.filters.transcoder import ArgumentError, to_json
from sofamesh.plugins.filters.transcoder.bolt_call import SOFA_REQUEST_CLASS, bolt_request, read_bolt_response
from sofamesh.plugins.filters.transcoder.result import RpcResult
from sofamesh.plugins.protocols.bolt.frames import V1_RESPONSE
from sofamesh.plugins.protocols.bolt.hessian import argument_bytes, read_method_name
from tests.conformance.bolt_peers import Peer, node_provider
from tests.conformance.rpc_exchange import exchange

SERVICE = "com.example.EchoService:1.0"


@pytest.fixture(scope="module")
def provider() -> Iterator[Peer]:
    with node_provider("com.example.EchoService", "t1") as peer:
        yield peer


def _bolt_length(data: bytes) -> int | None:
    if len(data) < V1_RESPONSE.size:
        return None
    class_len, header_len, content_len = V1_RESPONSE.unpack_from(data)[-3:]
    return int(V1_RESPONSE.size + class_len + header_len + content_len)


def _call(provider: Peer, frame: bytes) -> RpcResult:
    return read_bolt_response(exchange(provider.port, frame, _bolt_length))


def test_json_arguments_reach_sofa_rpc_node_and_its_answers_come_back_as_json(provider: Peer) -> None:
    cases = [
        ("echo", [("s", "héllo 😀")], ["java.lang.String"], "t1:héllo 😀"),
        ("plus", [("a", 2), ("b", "40")], ["int", "java.lang.Long"], 42),
        ("whoami", [], [], "t1"),
        ("plus", [("a", 1.5), ("b", "2.25")], ["double", "java.lang.Double"], 3.75),
        ("echo", [("b", "héllo")], ["java.lang.String"], "t1:héllo"),
    ]
    for i, (method, args, types, expected) in enumerate(cases):
        frame = bolt_request(i + 1, service=SERVICE, method=method, args=args, java_types=types, dialect="draft")
        result = _call(provider, frame)
        assert (result.exception, to_json(result.value)) == ("", expected), method


def test_a_date_and_bytes_reach_sofa_rpc_node_as_a_date_and_a_buffer(provider: Peer) -> None:
    # The provider answers "<tag>:" + String(argument): a JS Date prints its year, a Buffer its bytes.
    frame = bolt_request(
        5,
        service=SERVICE,
        method="echo",
        args=[("when", "2020-06-01T00:00:00Z")],
        java_types=["java.util.Date"],
        dialect="draft",
    )
    when = _call(provider, frame)
    assert when.exception == "" and isinstance(when.value, str) and "2020" in when.value
    assert not when.value.endswith("000")  # not the epoch milliseconds as a number
    frame = bolt_request(
        6, service=SERVICE, method="echo", args=[("raw", [104, 105])], java_types=["byte[]"], dialect="draft"
    )
    assert _call(provider, frame).value == "t1:hi"
    frame = bolt_request(
        7, service=SERVICE, method="echo", args=[("raw", "aGk=")], java_types=["byte[]"], dialect="draft"
    )
    assert _call(provider, frame).value == "t1:hi"


def test_a_provider_exception_names_its_class_and_message(provider: Peer) -> None:
    frame = bolt_request(
        7, service=SERVICE, method="fail", args=[("msg", "boom")], java_types=["java.lang.String"], dialect="draft"
    )
    result = _call(provider, frame)
    assert result.exception == "com.alipay.remoting.rpc.exception.RpcServerException"
    assert result.message == "Error: fail: boom"


def test_the_hessian_2_form_is_a_sofa_request_object_then_each_argument() -> None:
    frame = bolt_request(
        1,
        service=SERVICE,
        method="save",
        args=[("user", {"name": "ann"}), ("n", 3)],
        java_types=["com.example.User", "int"],
    )
    content = frame[frame.index(SOFA_REQUEST_CLASS.encode()) + len(SOFA_REQUEST_CLASS) :]
    content = content[content.index(b"C") :]
    assert read_method_name(content) == "save"
    r = HessianReader(content)
    request = r.read()
    assert isinstance(request, JavaObject) and request.class_name == SOFA_REQUEST_CLASS
    assert request.fields["targetServiceUniqueName"] == SERVICE
    assert request.fields["methodArgSigs"] == TypedList(["com.example.User", "int"], "[string")
    assert r.read() == JavaObject("com.example.User", {"name": "ann"}) and r.read() == 3
    assert argument_bytes(content, 1) == b"\x93"


def test_the_hessian_2_generic_call_is_the_named_method_as_sofarpcs_consumer_revises_it() -> None:
    frame = bolt_request(
        2, service=SERVICE, method="save", args=[("user", {"name": "ann"}), ("n", 2**40)], java_types=None
    )
    assert b"sofa_head_generic_type" in frame and b"generic.revise" in frame
    content = frame[frame.index(SOFA_REQUEST_CLASS.encode()) + len(SOFA_REQUEST_CLASS) :]
    content = content[content.index(b"C") :]
    r = HessianReader(content)
    request = r.read()
    assert isinstance(request, JavaObject) and request.fields["methodName"] == "save"
    assert request.fields["methodArgSigs"] == TypedList(["java.util.Map", "java.lang.Long"], "[string")
    assert (r.read(), r.read()) == ({"name": "ann"}, 2**40)


def test_a_bad_argument_names_itself_and_an_unknown_dialect_is_refused() -> None:
    with pytest.raises(ArgumentError, match="argument 'n': expected int, found object"):
        bolt_request(1, service=SERVICE, method="m", args=[("n", {})], java_types=["int"])
    with pytest.raises(ValueError, match="unknown hessian dialect 'v1'"):
        bolt_request(1, service=SERVICE, method="m", args=[], java_types=[], dialect="v1")
