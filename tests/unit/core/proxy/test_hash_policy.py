"""Route hash policies: what each hashes, how they combine, and a Dubbo request's first argument
read through the codec contract without decoding the body."""

from __future__ import annotations

import xxhash

from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.config.model import HashPolicyConfig
from sofamesh.core.events import NEED_DATA, RequestHead
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.hash_policy import HashPolicy
from sofamesh.plugins.protocols.dubbo.codec import DubboCodecFactory
from sofamesh.plugins.protocols.dubbo.frames import encode_request, encode_string
from sofamesh.plugins.protocols.http1.codec import Http1CodecFactory

PEER = ("10.1.2.3", 5555)
HTTP = Http1CodecFactory().new_codec(Role.SERVER, CodecLimits())


def _policy(*items: dict[str, object]) -> HashPolicy:
    return HashPolicy([HashPolicyConfig.model_validate(i) for i in items])


def _head(path: str = "/", **headers: str) -> RequestHead:
    return RequestHead("http1", 0, "web", "GET", path, headers=Headers([(k.replace("_", "-"), v)
                                                                        for k, v in headers.items()]))


def test_a_header_hashes_its_value_with_xxhash64_as_envoy() -> None:
    p = _policy({"header": {"header_name": "X-User"}})
    assert p.hash(_head(x_user="alice"), PEER, HTTP) == xxhash.xxh64_intdigest(b"alice")
    assert p.hash(_head(), PEER, HTTP) is None  # nothing to hash: the balancer picks at random


def test_cookie_query_parameter_and_source_ip_each_hash_their_value() -> None:
    assert _policy({"cookie": {"name": "sid"}}).hash(_head(cookie="a=1; sid=xyz"), PEER, HTTP) == \
        xxhash.xxh64_intdigest(b"xyz")
    assert _policy({"query_parameter": {"name": "u"}}).hash(_head("/p?x=1&u=bob"), PEER, HTTP) == \
        xxhash.xxh64_intdigest(b"bob")
    assert _policy({"connection_properties": {"source_ip": True}}).hash(_head(), PEER, HTTP) == \
        xxhash.xxh64_intdigest(b"10.1.2.3")


def test_policies_combine_by_rotate_and_xor_and_a_terminal_one_ends_the_list() -> None:
    a, b = xxhash.xxh64_intdigest(b"alice"), xxhash.xxh64_intdigest(b"10.1.2.3")
    both = _policy({"header": {"header_name": "x-user"}}, {"connection_properties": {"source_ip": True}})
    assert both.hash(_head(x_user="alice"), PEER, HTTP) == (((a << 1) | (a >> 63)) & (2**64 - 1)) ^ b
    term = _policy({"header": {"header_name": "x-user"}, "terminal": True}, {"connection_properties": {"source_ip": True}})
    assert term.hash(_head(x_user="alice"), PEER, HTTP) == a
    assert term.hash(_head(), PEER, HTTP) == b  # the terminal one found nothing: the next one counts


def _dubbo_head(args: bytes, types: str, attachments: dict[str, str] | None = None) -> tuple[RequestHead, object]:
    codec = DubboCodecFactory().new_codec(Role.SERVER, CodecLimits())
    codec.receive_data(encode_request(7, "com.example.Echo", "echo", parameter_types=types, args=args,
                                      attachments=attachments))
    head = codec.next_event()
    assert isinstance(head, RequestHead) and codec.next_event() is NEED_DATA
    return head, codec


def test_dubbo_first_argument_bytes_come_from_the_codec_without_decoding() -> None:
    head, codec = _dubbo_head(encode_string("key-1") + b"\x91", "Ljava/lang/String;I")
    assert codec.request_argument(head, 0) == encode_string("key-1")  # type: ignore[attr-defined]
    assert codec.request_argument(head, 1) == b"\x91"  # type: ignore[attr-defined]
    assert codec.request_argument(head, 2) is None  # type: ignore[attr-defined]
    p = _policy({"argument": {"index": 0}})
    assert p.hash(head, PEER, codec) == xxhash.xxh64_intdigest(encode_string("key-1"))  # type: ignore[arg-type]
    other, _ = _dubbo_head(encode_string("key-2") + b"\x91", "Ljava/lang/String;I")
    assert p.hash(other, PEER, codec) != p.hash(head, PEER, codec)  # type: ignore[arg-type]


def test_an_rpc_header_policy_reads_dubbo_attachments() -> None:
    head, codec = _dubbo_head(encode_string("k"), "Ljava/lang/String;", {"tenant": "t1"})
    p = _policy({"header": {"header_name": "tenant"}})
    assert p.hash(head, PEER, codec) == xxhash.xxh64_intdigest(b"t1")  # type: ignore[arg-type]
