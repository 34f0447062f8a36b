"""Codec events: the constructor, validation, equality and hashing third-party codecs rely on."""

from __future__ import annotations

import dataclasses

import pytest

from sofamesh.core.events import BodyChunk, EndOfMessage, RequestHead, ResponseHead, StreamReset
from sofamesh.core.headers import Headers


def test_request_head_fields_keep_their_positional_order() -> None:
    names = [f.name for f in dataclasses.fields(RequestHead)]
    assert names == ["protocol", "request_id", "service", "method", "path", "version", "group", "headers",
                     "oneway", "end_stream", "raw", "timeout_ms", "resolve", "meta"]
    head = RequestHead("bolt", 3, "svc", "m", "", "1.0", "g", Headers(), True, True, b"f", 50, None, "meta")
    assert head == RequestHead(protocol="bolt", request_id=3, service="svc", method="m", version="1.0", group="g",
                               oneway=True, raw=b"f", timeout_ms=50, meta="meta")


def test_response_head_fields_keep_their_positional_order() -> None:
    names = [f.name for f in dataclasses.fields(ResponseHead)]
    assert names == ["protocol", "request_id", "status", "http_status", "headers", "reason", "end_stream", "raw",
                     "meta"]
    assert ResponseHead("dubbo", 9, 20, 200, Headers(), "", True, b"f") == ResponseHead(
        protocol="dubbo", request_id=9, status=20, raw=b"f")


@pytest.mark.parametrize(("build", "message"), [
    (lambda: RequestHead("bolt", request_id=-1), "RequestHead.request_id must be >= 0, got -1"),
    (lambda: RequestHead("bolt", timeout_ms=-5), "RequestHead.timeout_ms must be >= 0 or None, got -5"),
    (lambda: ResponseHead("bolt", http_status=99), "ResponseHead.http_status must be 100..599, got 99"),
    (lambda: ResponseHead("bolt", 1, 0, 600), "ResponseHead.http_status must be 100..599, got 600"),
    (lambda: BodyChunk(b""), "BodyChunk.data must not be empty"),
    (lambda: StreamReset(0), "StreamReset.stream_id must be > 0, got 0"),
])
def test_invalid_events_are_refused_with_a_message_naming_the_field(build: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build()  # type: ignore[operator]
    assert str(info.value) == message


def test_equal_heads_hash_equal_and_can_key_a_set() -> None:
    a = RequestHead("bolt", 1, "svc", headers=Headers([("k", "v")]), raw=b"x")
    b = RequestHead("bolt", 1, "svc", headers=Headers([("k", "v")]), raw=b"x")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, RequestHead("bolt", 2, "svc")}) == 2
    assert hash(ResponseHead("bolt", 1)) == hash(ResponseHead("bolt", 1))


def test_replace_makes_a_changed_copy_and_leaves_the_original_alone() -> None:
    head = ResponseHead("http2", 1, 200, 200, Headers([(":status", "200")]))
    moved = dataclasses.replace(head, request_id=7)
    assert (head.request_id, moved.request_id) == (1, 7)
    assert moved.headers is head.headers
    with pytest.raises(ValueError, match="request_id must be >= 0"):
        dataclasses.replace(RequestHead("bolt"), request_id=-2)


def test_body_events_compare_hash_and_copy_by_value() -> None:
    assert BodyChunk(b"ab", 3) == BodyChunk(data=b"ab", stream_id=3) != BodyChunk(b"ab", 5)
    assert hash(BodyChunk(b"ab", 3)) == hash(BodyChunk(b"ab", 3))
    end = EndOfMessage(Headers([("grpc-status", "0")]), 7)
    assert end == EndOfMessage(trailers=Headers([("grpc-status", "0")]), stream_id=7) != EndOfMessage(None, 7)
    assert hash(end) == hash(EndOfMessage(Headers([("grpc-status", "0")]), 7))
    assert EndOfMessage() == EndOfMessage(None, 0)
    moved = dataclasses.replace(end, stream_id=9)
    assert (end.stream_id, moved.stream_id, moved.trailers) == (7, 9, end.trailers)
    with pytest.raises(ValueError, match=r"BodyChunk\.data must not be empty"):
        dataclasses.replace(BodyChunk(b"x"), data=b"")
