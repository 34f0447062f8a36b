"""Reading a SofaRequest's methodName from hessian bytes, and giving up cleanly on anything else."""

from __future__ import annotations

import pytest

from sofamesh.plugins.protocols.bolt.hessian import read_method_name
from tests.unit.plugins.protocols.bolt.bolt_captured import NODE_V1_REQUEST

CLASS = b"com.alipay.sofa.rpc.core.request.SofaRequest"


def _str(s: str) -> bytes:
    b = s.encode()
    assert len(s) < 32
    return bytes([len(s)]) + b


def node_content() -> bytes:
    # v1 request: 22-byte header, then className, header map, content
    class_len = int.from_bytes(NODE_V1_REQUEST[14:16], "big")
    header_len = int.from_bytes(NODE_V1_REQUEST[16:18], "big")
    return NODE_V1_REQUEST[22 + class_len + header_len :]


def test_the_method_name_is_read_from_the_draft_encoding_sofa_rpc_node_writes() -> None:
    assert read_method_name(node_content()) == "echo"


def test_the_method_name_is_read_from_hessian_2_class_definitions() -> None:
    body = b"C" + b"\x30" + bytes([len(CLASS)]) + CLASS + b"\x92" + _str("targetAppName") + _str("methodName")
    body += b"\x60" + _str("app") + _str("sayHello") + b"\x00"
    assert read_method_name(body) == "sayHello"
    body2 = b"C" + _str("x.Req") + b"\x91" + _str("methodName") + b"O\x90" + b"S\x00\x03" + "héé".encode()
    assert read_method_name(body2) == "héé"


@pytest.mark.parametrize("body", [
    b"", b"N", b"M\x00", b"C\x05x.Req\x91\x0amethodName",  # no instance yet
    b"C\x05x.Req\x91\x04name\x60\x04echo",  # no methodName field
    b"C\x05x.Req\x92\x01a\x0amethodName\x60\x56",  # a preceding field that is not simple
])
def test_bodies_that_are_not_a_readable_sofa_request_give_none(body: bytes) -> None:
    assert read_method_name(body) is None


def test_every_truncation_of_a_real_body_gives_none_or_the_name() -> None:
    content = node_content()
    for cut in range(len(content)):
        assert read_method_name(content[:cut]) in (None, "echo")


def test_fields_of_any_hessian_2_kind_before_method_name_are_skipped() -> None:
    fields = ["targetAppName", "requestProps", "methodArgSigs", "extra", "methodName"]
    body = b"C" + b"\x30" + bytes([len(CLASS)]) + CLASS + bytes([0x90 + len(fields)]) + b"".join(map(_str, fields))
    body += b"\x60" + _str("app")
    body += b"H" + _str("k") + _str("v") + _str("n") + b"\xc8\x10" + _str("d") + b"\x5f\x00\x00\x00\x01" + b"Z"
    body += b"\x71" + _str("[string") + _str("java.lang.String")  # String[1]
    # a nested object of another class, with a long, a binary and a back reference
    body += b"C" + _str("x.Inner") + b"\x93" + _str("l") + _str("b") + _str("r")
    body += b"\x61" + b"\xf8\x01" + b"\x23abc" + b"Q\x90"
    body += _str("sayHello")
    assert read_method_name(body) == "sayHello"


@pytest.mark.parametrize("bad_field", [b"\x40", b"H" + b"\x01a" * 3, b"\x62\x90", b"\x79"])
def test_an_unreadable_field_before_method_name_gives_none(bad_field: bytes) -> None:
    body = b"C" + _str("x.Req") + b"\x92" + _str("a") + _str("methodName") + b"\x60" + bad_field + _str("m")
    assert read_method_name(body) is None
