"""Responses a route answers itself, without an upstream: Envoy's ``direct_response`` and
``redirect``. Built once per route; an HTTP request gets the status, body and ``Location``; an RPC
request (a direct response on an RPC route) gets its protocol's error reply with the nearest kind."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.events import ResponseHead
from sofamesh.core.headers import Headers

if TYPE_CHECKING:
    from sofamesh.core.config.model import DirectResponseConfig, RedirectConfig, RouteMatch
    from sofamesh.core.events import RequestHead

_REPLY_BY_HTTP = {s.http_status: s for s in reversed(ReplyStatus)}


class Answerer(Protocol):
    """What a local response needs of a stream (``core/proxy/stream.py``'s ``Stream`` is one)."""

    head: RequestHead

    def respond(self, head: ResponseHead, body: bytes) -> None: ...
    def local_reply(self, status: ReplyStatus, message: str) -> None: ...


class LocalResponse:
    __slots__ = ("_body", "_redirect", "_status", "_strip")

    def __init__(self, direct: DirectResponseConfig | None, redirect: RedirectConfig | None,
                 match: RouteMatch) -> None:
        self._redirect = redirect
        self._status = redirect.code if redirect is not None else direct.status if direct is not None else 503
        self._body = direct.body.encode() if direct is not None else b""
        pm = match.path
        self._strip = len(pm.prefix) if pm is not None and pm.prefix is not None else 1

    def location(self, head: RequestHead) -> str:
        r = self._redirect
        assert r is not None
        authority = head.headers.get(":authority") or head.headers.get("host") or head.service
        host, _, port = authority.partition(":")
        if r.host is not None:
            host, _, given_port = r.host.partition(":")
            port = given_port or ("" if r.port is None else port)
        if r.port is not None:
            port = str(r.port) if r.port else ""
        scheme = r.scheme or head.headers.get(":scheme") or "http"
        if r.scheme is not None and r.port is None and (r.host is None or ":" not in r.host) and not r.keep_port:
            port = ""  # a scheme change drops the request's port, as in Envoy
        path, sep, query = head.path.partition("?")
        if r.path is not None:
            path, sep2, q2 = r.path.partition("?")
            if sep2:
                sep, query = sep2, q2
        elif r.prefix is not None:
            path = r.prefix + path[self._strip:]
        if r.strip_query:
            sep = query = ""
        return f"{scheme}://{host}{':' + port if port else ''}{path or '/'}{sep}{query}"

    def send(self, stream: Answerer) -> None:
        head = stream.head
        if head.raw is not None or head.protocol not in ("http1", "http2"):
            kind = _REPLY_BY_HTTP.get(self._status, ReplyStatus.INTERNAL)
            stream.local_reply(kind, f"route answers {self._status} itself")
            return
        headers = [("content-length", str(len(self._body)))]
        if self._body:
            headers.append(("content-type", "text/plain"))
        if self._redirect is not None:
            headers.append(("location", self.location(head)))
        stream.respond(ResponseHead(head.protocol, head.request_id, self._status, self._status, Headers(headers),
                                    end_stream=not self._body), self._body)


__all__ = ["LocalResponse"]
