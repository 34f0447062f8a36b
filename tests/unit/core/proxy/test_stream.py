"""Stream helpers: the forwarded HTTP head keeps every field of the original and adds x-forwarded-*."""

from __future__ import annotations

import dataclasses

from sofamesh.core.events import RequestHead
from sofamesh.core.headers import Headers
from sofamesh.core.proxy.stream import _forwarded


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
