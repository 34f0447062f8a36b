"""A route that answers HTTP/JSON by calling an RPC service: the seam between the stream and a
transcoder. The stream gathers such a route's request body (and only that route's), asks the
transcoder for the RPC request (its raw frame built, or a streamed call: an HTTP/2 head and its whole
body, as gRPC), sends it on the cluster's pool as any request, and asks the transcoder to turn the
RPC answer (for a streamed call: its head, whole body and trailers), or the proxy's own error, into
an HTTP response. What a transcoder builds (Dubbo, Bolt, gRPC, ...) lives in plugins; core knows only
this shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from sofamesh.core.proxy.filter_chain import Filter

if TYPE_CHECKING:
    from sofamesh.core.codec import ReplyStatus
    from sofamesh.core.events import RequestHead, ResponseHead
    from sofamesh.core.headers import Headers

# An HTTP answer a transcoder makes: status and JSON body, optionally with headers of its own
# (gRPC-JSON: grpc-status, grpc-message; a content-type replaces application/json).
JsonReply = tuple[int, bytes] | tuple[int, bytes, list[tuple[str, str]]]


class Call:
    """A streamed call a transcoder built: the request ``head`` (no ``raw``: its protocol's codec
    encodes it, as an HTTP/2 request) and its whole ``body``, sent after it and ended."""

    __slots__ = ("body", "head")

    def __init__(self, head: RequestHead, body: bytes) -> None:
        self.head = head
        self.body = body


@mypyc_attr(allow_interpreted_subclasses=True)  # transcoder plugins subclass it
class RouteTranscoder(Filter):
    """A route filter that replaces forwarding: a route whose filters include one sends what
    ``request`` builds instead of the HTTP request, and answers with what ``response`` or ``error``
    make. Routes without one pay a single ``None`` test."""

    max_body_bytes: int = 256 * 1024
    protocol: str = ""  # the protocol its calls are built in: the route's clusters must speak it
    # A streamed call's answer comes as a head, body chunks and trailers: the stream gathers the
    # body (up to ``max_answer_bytes``) and hands ``response`` all three.
    gathers_answer: bool = False
    max_answer_bytes: int = 4 * 1024 * 1024

    def takes(self, head: RequestHead) -> bool:
        """Whether the HTTP request ``head`` is one to transcode; any other goes to the route's
        cluster untouched (Envoy's gRPC-JSON transcoder passes unknown paths through)."""
        return True

    def request(self, head: RequestHead, body: bytes, timeout_ms: int = 0) -> RequestHead | Call | JsonReply:
        """The RPC request (``raw`` holds its whole frame, any request id: the pool patches it), or a
        streamed ``Call``, for the HTTP request ``head`` with its whole ``body``; or, when the
        request cannot become a call, the HTTP status and JSON body that answer it (a 400 naming
        the argument and its type). ``timeout_ms`` is the call's timeout (the route's, capped by the
        request's own; 0: none), for protocols whose frames carry one (Bolt)."""
        raise NotImplementedError

    def response(
        self, head: RequestHead, answer: ResponseHead, body: bytes = b"", trailers: Headers | None = None
    ) -> JsonReply:
        """The HTTP status and JSON body for the RPC ``answer``: a whole response frame in ``raw``;
        for a streamed call, the answer's head, its whole ``body`` and its ``trailers`` (None when
        the head ended the stream)."""
        raise NotImplementedError

    def error(self, head: RequestHead, status: ReplyStatus, message: str) -> JsonReply:
        """The HTTP status and JSON body for the proxy's own answer (no provider, timeout, ...)."""
        raise NotImplementedError


__all__ = ["Call", "JsonReply", "RouteTranscoder"]
