"""A Bolt request's arguments as the codec hands them to a hash policy (``Codec.request_argument``):
the encoded bytes, found by skipping the SofaRequest object without decoding it."""

from __future__ import annotations

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.events import RequestHead
from sofamesh.plugins.protocols.bolt.codec import BoltCodecFactory
from sofamesh.plugins.protocols.bolt.hessian import argument_bytes

from .bolt_captured import NODE_V1_REQUEST, NODE_V2_REQUEST, NODE_V2CRC_REQUEST


def _head(frame: bytes) -> tuple[RequestHead, object]:
    codec = BoltCodecFactory().new_codec(Role.SERVER, CodecLimits())
    codec.receive_data(frame)
    head = codec.next_event()
    assert isinstance(head, RequestHead)
    return head, codec


def test_sofa_rpc_nodes_first_argument_comes_out_of_every_framing() -> None:
    for frame in (NODE_V1_REQUEST, NODE_V2_REQUEST, NODE_V2CRC_REQUEST):
        head, codec = _head(frame)
        assert codec.request_argument(head, 0) == b"\x02hi"  # type: ignore[attr-defined]  # the string "hi"
        assert codec.request_argument(head, 1) is None  # type: ignore[attr-defined]  # echo has one argument


def test_a_hessian_2_body_and_a_body_it_cannot_read() -> None:
    # 2.0: class definition 'C', instance 0x60, then two arguments (compact int 5, string "ab")
    body = b"C\x0bSofaRequest\x91\x0amethodName`\x04echo" + b"\x95" + b"\x02ab"
    assert argument_bytes(body, 0) == b"\x95" and argument_bytes(body, 1) == b"\x02ab"
    assert argument_bytes(body, 2) is None
    assert argument_bytes(b"\xff\x00", 0) is None
