"""Codec events: what a sans-IO codec emits from bytes and accepts to encode. Slotted, final, and
immutable by contract.

Two shapes of exchange share these events:

* streaming protocols (HTTP/1, HTTP/2): ``RequestHead(end_stream=False)``, then ``BodyChunk``\\ s,
  then ``EndOfMessage``; ``raw`` is ``None`` and the proxy re-encodes the head.
* framed RPC protocols (Bolt, Dubbo, Thrift): one ``RequestHead(end_stream=True, raw=frame)`` per
  frame; the proxy forwards ``raw`` untouched except for the request id (see ``Codec.rewrite_request_id``)
  and, on a route with a header mutation, the header section (``Codec.edit_headers``).

Immutability is a contract, not enforced: an event may be handed to several filters, kept by a
stream and re-sent, so nobody assigns to an event's fields once it is built; make a changed copy
with ``dataclasses.replace`` (or the constructor) instead. ``RequestHead`` and ``ResponseHead`` are
built once or twice per proxied request, and ``frozen=True`` made that about 5x dearer in CPython
(every field set through ``object.__setattr__``), so the two heads are plain slotted dataclasses
that keep what the rest relies on: the same constructor (positional order and keywords), the
same validation errors, equality, and hashing by value (``unsafe_hash``). The rarer events stay
``frozen=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from sofamesh.core.headers import Headers


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Returned by ``Codec.next_event()`` when more bytes are needed."""

NeedData = _NeedData
"""The type of ``NEED_DATA``, for annotations in codecs outside sofamesh (``-> Event | NeedData``)."""

_EMPTY = Headers()

_Meta: TypeAlias = object
"""The type of the ``meta`` fields (protocol-private state). Spelled through a module name because
the compiled build (mypyc, setup.py) resolves dataclass annotations in the module's globals, where
``object`` is not."""


# RequestHead and ResponseHead write their own ``__init__`` (``init=False``): the one ``dataclass``
# generates is interpreted code even in the compiled build (mypyc compiles the class, not what the
# decorator adds at import), and a proxied request builds two of each. Same signature and checks.
@dataclass(slots=True, unsafe_hash=True, init=False)
class RequestHead:
    """The routable part of a request.

    ``service`` is the RPC service (Bolt service, Dubbo interface, gRPC ``package.Service``) or, for
    plain HTTP, the authority (Host). ``method`` is the RPC method or the HTTP method. ``path`` is the
    HTTP path (empty for RPC). ``resolve`` lets a codec provide keys that are expensive to read (a
    method name inside a Bolt body, a Dubbo group inside the attachments) only when a route asks.
    ``meta`` is protocol-private state the same codec needs again (HTTP version, framing flags...).
    Immutable by contract (see the module docstring): copy with ``dataclasses.replace``, never assign.
    """

    protocol: str
    request_id: int = 0
    service: str = ""
    method: str = ""
    path: str = ""
    version: str = ""
    group: str = ""
    headers: Headers = field(default=_EMPTY)
    oneway: bool = False
    end_stream: bool = True
    raw: bytes | None = None
    timeout_ms: int | None = None
    resolve: Callable[[str], str | None] | None = None
    meta: _Meta = None

    def __init__(
        self,
        protocol: str,
        request_id: int = 0,
        service: str = "",
        method: str = "",
        path: str = "",
        version: str = "",
        group: str = "",
        headers: Headers = _EMPTY,
        oneway: bool = False,
        end_stream: bool = True,
        raw: bytes | None = None,
        timeout_ms: int | None = None,
        resolve: Callable[[str], str | None] | None = None,
        meta: _Meta = None,
    ) -> None:
        if request_id < 0:
            raise ValueError(f"RequestHead.request_id must be >= 0, got {request_id}")
        if timeout_ms is not None and timeout_ms < 0:
            raise ValueError(f"RequestHead.timeout_ms must be >= 0 or None, got {timeout_ms}")
        self.protocol = protocol
        self.request_id = request_id
        self.service = service
        self.method = method
        self.path = path
        self.version = version
        self.group = group
        self.headers = headers
        self.oneway = oneway
        self.end_stream = end_stream
        self.raw = raw
        self.timeout_ms = timeout_ms
        self.resolve = resolve
        self.meta = meta

    def key(self, name: str) -> str | None:
        """A routing key by name: a field, a header, or what the codec's ``resolve`` finds (lazily)."""
        if name == "service":
            v: str | None = self.service
        elif name == "method":
            v = self.method
        elif name == "version":
            v = self.version
        elif name == "group":
            v = self.group
        elif name == "path":
            v = self.path
        else:
            v = self.headers.get(name)
        if not v and self.resolve is not None:
            v = self.resolve(name)
        return v


@dataclass(slots=True, unsafe_hash=True, init=False)
class ResponseHead:
    """A response. ``status`` is protocol-native (HTTP code, Bolt status, Dubbo status byte);
    ``http_status`` is the same outcome mapped to an HTTP code, for stats and bridging.
    Immutable by contract (see the module docstring): copy with ``dataclasses.replace``, never assign."""

    protocol: str
    request_id: int = 0
    status: int = 200
    http_status: int = 200
    headers: Headers = field(default=_EMPTY)
    reason: str = ""
    end_stream: bool = True
    raw: bytes | None = None
    meta: _Meta = None

    def __init__(
        self,
        protocol: str,
        request_id: int = 0,
        status: int = 200,
        http_status: int = 200,
        headers: Headers = _EMPTY,
        reason: str = "",
        end_stream: bool = True,
        raw: bytes | None = None,
        meta: _Meta = None,
    ) -> None:
        if not 100 <= http_status <= 599:
            raise ValueError(f"ResponseHead.http_status must be 100..599, got {http_status}")
        self.protocol = protocol
        self.request_id = request_id
        self.status = status
        self.http_status = http_status
        self.headers = headers
        self.reason = reason
        self.end_stream = end_stream
        self.raw = raw
        self.meta = meta


@dataclass(frozen=True, slots=True, init=False)
class BodyChunk:
    """Body bytes of a streaming message, in order. Never empty.

    Built for every body an HTTP message carries: its own ``__init__``, as the heads' (the one
    ``dataclass`` writes for a frozen class runs interpreted even in the compiled build)."""

    data: bytes
    stream_id: int = 0

    def __init__(self, data: bytes, stream_id: int = 0) -> None:
        if not data:
            raise ValueError("BodyChunk.data must not be empty")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "stream_id", stream_id)


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The end of a streaming message, with trailers when the protocol has them."""

    trailers: Headers | None = None
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keep-alive probe (``reply=False``) or its answer (``reply=True``)."""

    request_id: int = 0
    reply: bool = False
    raw: bytes | None = None
    meta: _Meta = None


@dataclass(frozen=True, slots=True)
class GoAway:
    """The peer will accept no new requests on this connection."""

    reason: str = ""
    last_request_id: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection (``receive_data(b"")``)."""

    clean: bool = True


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset one stream of a streaming multiplexed protocol (HTTP/2 RST_STREAM): the stream
    is gone in both directions; the connection and its other streams go on.

    ``error_code`` is the protocol's code (HTTP/2: 0 NO_ERROR, 8 CANCEL, ...), ``reason`` its name.
    """

    stream_id: int
    error_code: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        if self.stream_id <= 0:
            raise ValueError(f"StreamReset.stream_id must be > 0, got {self.stream_id}")


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The peer gave send window back: ``Codec.sendable(stream_id)`` may have grown.

    ``stream_id == 0`` means the connection window grew, so every blocked stream may proceed.
    """

    stream_id: int = 0


Event = (RequestHead | ResponseHead | BodyChunk | EndOfMessage | Heartbeat | GoAway | ConnectionClosed | StreamReset
         | WindowOpened)

__all__ = [
    "NEED_DATA",
    "BodyChunk",
    "ConnectionClosed",
    "EndOfMessage",
    "Event",
    "GoAway",
    "Heartbeat",
    "NeedData",
    "RequestHead",
    "ResponseHead",
    "StreamReset",
    "WindowOpened",
]
