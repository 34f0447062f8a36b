"""Header mutation on RPC routes: the edit codecs apply to header maps / attachments, the refusal of
a route whose protocol cannot change headers, and the rpc_proxy routes from xDS carrying it."""

from __future__ import annotations

import pytest

from sofamesh.core.build import proxy_host
from sofamesh.core.codec import HeaderEdit
from sofamesh.core.config.check import check_mapping, resolve
from sofamesh.core.config.loader import from_mapping
from sofamesh.core.errors import ConfigErrors
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.header_mutation import HeaderMutation


def test_remove_then_set_then_add_only_where_absent_with_exact_keys() -> None:
    edit = HeaderEdit(remove=frozenset({"a", "Gone"}), set=(("b", "2"), ("new", "n")), add=(("c", "3"), ("d", "4")))
    entries: list[tuple[str | None, str]] = [("a", "1"), ("B", "x"), ("b", "1"), ("c", "0"), (None, "?"), ("gone", "g")]
    assert edit.edited(entries) == [
        ("B", "x"),
        ("b", "2"),
        ("c", "0"),
        (None, "?"),
        ("gone", "g"),
        ("new", "n"),
        ("d", "4"),
    ]
    once = HeaderEdit(set=(("b", "2"),))
    assert once.edited([("b", "1"), ("b", "1")]) == [("b", "2")]  # a repeated key keeps the edit's value once
    assert HeaderEdit(remove=frozenset({"z"}), set=(("b", "1"),)).edited([("b", "1")]) is None  # nothing changes
    assert HeaderEdit().edited([("a", "1")]) is None


def test_decoded_rpc_headers_follow_the_same_edit_as_the_frame() -> None:
    m = HeaderMutation(
        from_mapping(
            {
                "listeners": [
                    {
                        "address": "127.0.0.1:1",
                        "protocols": ["bolt"],
                        "routes": [
                            {
                                "cluster": "c",
                                "request_headers": {"set": {"X-Tenant": "t"}, "remove": ["service"], "add": {"k": "v"}},
                            }
                        ],
                    }
                ],
                "clusters": [{"name": "c", "endpoints": ["127.0.0.1:2"]}],
            }
        )
        .listeners[0]
        .routes[0]
        .request_headers
    )
    assert list(m.edited_headers(Headers([("service", "s"), ("x-tenant", "old")]))) == [
        ("x-tenant", "old"),
        ("X-Tenant", "t"),
        ("k", "v"),
    ]  # RPC keys are case-sensitive


def _config(protocols: object, route: dict[str, object]) -> dict[str, object]:
    return {
        "listeners": [
            {"name": "rpc", "address": "127.0.0.1:1", "protocols": protocols, "routes": [{"cluster": "c", **route}]}
        ],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:2"]}],
    }


def test_a_mutation_on_a_protocol_that_cannot_change_headers_is_refused_naming_protocol_and_route() -> None:
    data = _config(["bolt", "tcp"], {"name": "to-c", "response_headers": {"set": {"k": "v"}}})
    with pytest.raises(ConfigErrors) as exc:
        resolve(from_mapping(data), proxy_host())
    msg = (
        "listeners[0].routes[0].response_headers: route 'to-c': protocol 'tcp' cannot change the headers of "
        "its messages (its codec has no header mutation); limit the route to protocols that can "
        "(match.protocol, or the listener's protocols)"
    )
    assert str(exc.value) == msg
    assert [str(e) for e in check_mapping(data, proxy_host())] == [msg]  # sofamesh check-config says the same


@pytest.mark.parametrize(
    ("protocols", "match"),
    [
        (["bolt", "dubbo"], {}),
        (["http1", "http2"], {}),
        ("auto", {"protocol": "dubbo"}),
        (["bolt", "tcp"], {"protocol": "bolt"}),
    ],
)
def test_protocols_that_can_change_headers_are_accepted(protocols: object, match: dict[str, str]) -> None:
    data = _config(protocols, {"match": match, "request_headers": {"set": {"k": "v"}, "remove": ["x"]}})
    resolve(from_mapping(data), proxy_host())


def test_rpc_proxy_routes_from_xds_carry_their_header_mutation() -> None:
    from sofamesh.core.xds.translate import Translated, assemble, translate_cluster, translate_listener
    from tests.integration.xds.tiny_ads import static_cluster
    from tests.unit.core.xds.test_translate import _rpc_listener

    route = {
        "name": "mr",
        "match": {"service": {"exact": "com.acme.Echo"}},
        "cluster": "c",
        "request_headers": {"set": {"foo": "bar"}},
        "response_headers": {"add": {"served-by": "mesh"}},
    }
    t = translate_listener(_rpc_listener({"protocol": "dubbo", "routes": [route]}))
    assert t is not None
    state = Translated(listeners={"rpc": t}, clusters={"c": translate_cluster(static_cluster("c", ["127.0.0.1:1"]))})
    (r,) = assemble(from_mapping({}), state, True).listeners[0].routes
    assert r.request_headers is not None and r.request_headers.set == {"foo": "bar"}
    assert r.response_headers is not None and r.response_headers.add == {"served-by": "mesh"}


def test_routing_keys_of_an_edited_dubbo_request_follow_the_edit() -> None:
    from sofamesh.core.codec import CodecLimits, Role
    from sofamesh.core.config.model import HeaderMutationConfig
    from sofamesh.core.events import RequestHead
    from sofamesh.plugins.protocols.dubbo.codec import DubboCodec
    from sofamesh.plugins.protocols.dubbo.frames import encode_request

    codec = DubboCodec(Role.SERVER, CodecLimits())
    codec.receive_data(encode_request(1, "com.acme.Echo", "echo", attachments={"group": "g1", "tenant": "a"}))
    head = codec.next_event()
    assert isinstance(head, RequestHead) and head.key("group") == "g1"
    m = HeaderMutation(HeaderMutationConfig(set={"tenant": "b"}, add={"zone": "z1"}, remove=["group"]))
    edited = m.request_frame(head, codec)
    assert edited.raw != head.raw and (edited.service, edited.method) == ("com.acme.Echo", "echo")
    assert (edited.key("group"), edited.key("tenant"), edited.key("zone")) == (None, "b", "z1")
    assert (
        m.request_frame(head, codec) is not head
        and HeaderMutation(HeaderMutationConfig()).request_frame(head, codec) is head
    )  # nothing to change: the same head, the same frame
