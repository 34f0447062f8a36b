"""A route that answers HTTP/JSON by calling an RPC service: the seam between the stream and a
transcoder. The stream gathers such a route's request body (and only that route's), asks the
transcoder for the RPC request (its raw frame built), sends it on the cluster's pool as any RPC
request, and asks the transcoder to turn the RPC answer, or the proxy's own error, into an HTTP
response. What a transcoder builds (Dubbo, Bolt, ...) lives in plugins; core knows only this shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from sofamesh.core.proxy.filter_chain import Filter

if TYPE_CHECKING:
    from sofamesh.core.codec import ReplyStatus
    from sofamesh.core.events import RequestHead, ResponseHead


@mypyc_attr(allow_interpreted_subclasses=True)  # transcoder plugins subclass it
class RouteTranscoder(Filter):
    """A route filter that replaces forwarding: a route whose filters include one sends what
    ``request`` builds instead of the HTTP request, and answers with what ``response`` or ``error``
    make. Routes without one pay a single ``None`` test."""

    max_body_bytes: int = 256 * 1024
    protocol: str = ""  # the protocol its calls are built in: the route's clusters must speak it

    def request(self, head: RequestHead, body: bytes) -> RequestHead | tuple[int, bytes]:
        """The RPC request (``raw`` holds its whole frame, any request id: the pool patches it) for
        the HTTP request ``head`` with its whole ``body``; or, when the request cannot become a call,
        the HTTP status and JSON body that answer it (a 400 naming the argument and its type)."""
        raise NotImplementedError

    def response(self, head: RequestHead, answer: ResponseHead) -> tuple[int, bytes]:
        """The HTTP status and JSON body for the RPC ``answer`` (a whole response frame in ``raw``)."""
        raise NotImplementedError

    def error(self, head: RequestHead, status: ReplyStatus, message: str) -> tuple[int, bytes]:
        """The HTTP status and JSON body for the proxy's own answer (no provider, timeout, ...)."""
        raise NotImplementedError


__all__ = ["RouteTranscoder"]
