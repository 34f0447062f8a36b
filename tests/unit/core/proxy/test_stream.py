"""Stream helpers: the forwarded HTTP head keeps every field of the original and adds x-forwarded-*."""

from __future__ import annotations

import dataclasses

from sofamesh.core.events import RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.stream import _answering, _forwarded
from sofamesh.core.upstream.pool import _on_stream


def _resolve(name: str) -> str | None:
    return None


def test_the_forwarded_head_keeps_every_field_and_adds_forwarded_headers() -> None:
    meta = object()
    head = RequestHead("http1", 7, "example.com", "POST", "/api", "v2", "g1",
                       Headers([("host", "example.com"), ("x-forwarded-for", "10.0.0.1")]), True, False,
                       b"raw", 1500, _resolve, meta)
    out = _forwarded(head, ("127.0.0.9", 5555))
    for f in dataclasses.fields(RequestHead):
        if f.name != "headers":
            assert getattr(out, f.name) == getattr(head, f.name), f.name
    # every field was given a non-default value above, so a field added later and not copied shows up here
    defaults = RequestHead("http1")
    for f in dataclasses.fields(RequestHead):
        if f.name != "protocol":
            assert getattr(head, f.name) != getattr(defaults, f.name), f"give {f.name} a non-default value in this test"
    assert out.headers.get("x-forwarded-for") == "10.0.0.1, 127.0.0.9"
    assert out.headers.get("x-forwarded-proto") == "http"
    assert out.headers.get("host") == "example.com"


def test_heads_sharing_one_headers_object_are_forwarded_for_their_own_peer_and_attempt() -> None:
    headers = Headers([("content-type", "application/grpc"), ("x-forwarded-proto", "https")])
    head = RequestHead("http2", 1, "a.B", "C", "/a.B/C", headers=headers, end_stream=False)
    first = _forwarded(head, ("10.0.0.1", 1))
    again = _forwarded(RequestHead("http2", 3, "a.B", "C", "/a.B/C", headers=headers, end_stream=True), ("10.0.0.1", 2))
    assert (again.request_id, again.end_stream) == (3, True)
    assert again.headers.items() == first.headers.items() == [
        ("content-type", "application/grpc"), ("x-forwarded-proto", "https"), ("x-forwarded-for", "10.0.0.1")]  # fmt: skip
    other = _forwarded(head, ("10.0.0.2", 1), attempt=True)
    assert other.headers.get("x-forwarded-for") == "10.0.0.2"
    assert other.headers.get("x-envoy-attempt-count") == "1"
    assert _forwarded(head, ("10.0.0.2", 1)).headers.get("x-envoy-attempt-count") is None
    assert headers.items() == [("content-type", "application/grpc"), ("x-forwarded-proto", "https")]  # untouched


def test_heads_moved_to_another_stream_id_keep_every_other_field() -> None:
    meta = object()
    request = RequestHead("http2", 7, "a.B", "C", "/a.B/C", "v2", "g1", Headers([("x", "1")]), True, False,
                          b"raw", 1500, _resolve, meta)
    response = ResponseHead("http2", 9, 404, 404, Headers([("x", "1")]), "Not Found", False, b"raw", meta)
    for head, moved in ((request, _on_stream(request, 11)), (response, _answering(response, 11))):
        assert moved.request_id == 11
        defaults = type(head)("http1")
        for f in dataclasses.fields(head):
            if f.name != "request_id":
                value = getattr(head, f.name)  # the same object, except ints: compiled (mypyc) classes rebox them
                assert getattr(moved, f.name) is value or (type(value) is int and getattr(moved, f.name) == value), f.name
            if f.name != "protocol":
                assert getattr(head, f.name) != getattr(defaults, f.name), f"give {f.name} a non-default value"
