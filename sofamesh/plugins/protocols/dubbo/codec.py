"""Dubbo 2 codec (dubbo:// over TCP, hessian2 bodies). Pure: bytes in, events out. No sockets, no
event loop, no logging.

One ``DubboCodec`` per connection. ``Role.SERVER`` faces a downstream consumer and emits
``RequestHead(end_stream=True, raw=<whole frame>)`` and ``Heartbeat``; ``Role.CLIENT`` faces an
upstream provider and emits ``ResponseHead(raw=<whole frame>)`` and ``Heartbeat``. Frames are
forwarded whole; only the 64-bit request id is rewritten, and the attachments map on a route with a
header mutation (``edit_headers``: the values before it are skipped, not decoded). Response bodies
(every result flag, 0-5, and error strings) are read only for that.

Routing keys (PROTOCOLS.md section 6):

- ``service`` is the interface (the body's service path), ``version`` the service version (empty
  when the body says null), ``method`` the method name. These and the parameter-type descriptor
  are the only body values read per request.
- ``group`` and every other attachment key (``interface``, ``timeout``, ``application``, custom
  keys...) are resolved lazily through ``RequestHead.resolve``: the attachments map sits after the
  arguments, so reading it means skipping every argument, which happens once per request and only
  when a route asks. ``dubbo_version`` and ``parameter_types`` resolve to the body head values.
  ``headers`` stays empty. An unreadable attachments map resolves every key to ``None``.

Local replies follow MOSN's choices (PROTOCOLS.md section 6): a response frame (flag 0x02) with the
request's id, a status byte, and one hessian string ``"<http code>|<reason>: <message>"``:

============================  ======  =========================
ReplyStatus                   status  reason
============================  ======  =========================
NO_ROUTE                      60      router unavailable
NO_HEALTHY_UPSTREAM           60      no healthy upstream
UPSTREAM_RESET                70      upstream reset
TIMEOUT                       30      timeout
OVERLOAD                      100     overload
RATE_LIMITED                  40      rate limited
DENIED                        80      permission denied
UNAUTHENTICATED               80      unauthenticated
CODEC_ERROR                   40      bad request
PAYLOAD_TOO_LARGE             40      payload too large
HEADERS_TOO_LARGE             40      headers too large
INTERNAL                      70      internal error
============================  ======  =========================

Request ids are 64-bit (``request_id_bits = 64``), read unsigned. The JavaScript peers
(dubbo2.js, @dubbo.ts) hold an id in a double, so ids above 2**53 come back altered from them; an
upstream id counter never gets there in practice.

Oneway requests get no reply: ``local_reply`` returns ``b""`` for them, and so does
``heartbeat_reply`` for a oneway event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from sofamesh.core.buffer import FrameBuffer
from sofamesh.core.codec import Codec, CodecFactory, CodecLimits, CodecState, Failure, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import NEED_DATA, ConnectionClosed, Heartbeat, RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.dubbo.frames import (
    FLAG_EVENT,
    FLAG_REQUEST,
    FLAG_TWOWAY,
    HEADER,
    HEADER_LEN,
    MAGIC,
    SERIALIZATION_HESSIAN2,
    SERIALIZATION_MASK,
    STATUS_BAD_REQUEST,
    STATUS_BAD_RESPONSE,
    STATUS_CLIENT_ERROR,
    STATUS_CLIENT_TIMEOUT,
    STATUS_OK,
    STATUS_SERVER_ERROR,
    STATUS_SERVER_TIMEOUT,
    STATUS_SERVICE_ERROR,
    STATUS_SERVICE_NOT_FOUND,
    STATUS_THREADPOOL_EXHAUSTED,
    BodyHead,
    argument_bytes,
    edit_request_attachments,
    edit_response_attachments,
    encode_frame,
    encode_string,
    heartbeat_frame,
    heartbeat_reply_frame,
    read_attachments,
    read_body_head,
    supports_response_attachments,
)

if TYPE_CHECKING:
    from sofamesh.core.codec import HeaderEdit
    from sofamesh.core.events import Event, _NeedData

__all__ = ["PROTOCOL", "DubboCodec", "DubboCodecFactory"]

PROTOCOL: Final = "dubbo"

_MAX_ID: Final = (1 << 64) - 1
_RECENT_HEADS: Final = 8  # body heads remembered per connection (see ``DubboCodec._body_head``)

_REPLY: Final[dict[ReplyStatus, tuple[int, str]]] = {
    ReplyStatus.NO_ROUTE: (STATUS_SERVICE_NOT_FOUND, "router unavailable"),
    ReplyStatus.NO_HEALTHY_UPSTREAM: (STATUS_SERVICE_NOT_FOUND, "no healthy upstream"),
    ReplyStatus.UPSTREAM_RESET: (STATUS_SERVICE_ERROR, "upstream reset"),
    ReplyStatus.TIMEOUT: (STATUS_CLIENT_TIMEOUT, "timeout"),
    ReplyStatus.REQUEST_TIMEOUT: (STATUS_SERVER_TIMEOUT, "request timeout"),
    ReplyStatus.OVERLOAD: (STATUS_THREADPOOL_EXHAUSTED, "overload"),
    ReplyStatus.RATE_LIMITED: (STATUS_BAD_REQUEST, "rate limited"),
    ReplyStatus.DENIED: (STATUS_SERVER_ERROR, "permission denied"),
    ReplyStatus.UNAUTHENTICATED: (STATUS_SERVER_ERROR, "unauthenticated"),
    ReplyStatus.CODEC_ERROR: (STATUS_BAD_REQUEST, "bad request"),
    ReplyStatus.PAYLOAD_TOO_LARGE: (STATUS_BAD_REQUEST, "payload too large"),
    ReplyStatus.HEADERS_TOO_LARGE: (STATUS_BAD_REQUEST, "headers too large"),
    ReplyStatus.INTERNAL: (STATUS_SERVICE_ERROR, "internal error"),
    ReplyStatus.UPSTREAM_OVERFLOW: (STATUS_THREADPOOL_EXHAUSTED, "overflow"),
}

_NOT_PROCESSED: Final = Failure.SERVER_ERROR | Failure.GATEWAY_ERROR | Failure.RETRIABLE
# What a Dubbo status means for retries and outlier detection (``Codec.classify``): client timeout
# (30) and thread pool exhausted (100) are gateway errors worth another provider, service not found
# (60) is worth another provider; server timeout (31) and bad response (50) are gateway errors the
# provider may have acted on; the other errors are 5xx, and 40 (bad request) is the caller's.
_FAILURES: Final[dict[int, Failure]] = {
    STATUS_OK: Failure(0),
    STATUS_CLIENT_TIMEOUT: _NOT_PROCESSED,
    STATUS_THREADPOOL_EXHAUSTED: _NOT_PROCESSED,
    STATUS_SERVICE_NOT_FOUND: Failure.RETRIABLE,
    STATUS_SERVER_TIMEOUT: Failure.SERVER_ERROR | Failure.GATEWAY_ERROR,
    STATUS_BAD_RESPONSE: Failure.SERVER_ERROR | Failure.GATEWAY_ERROR,
    STATUS_BAD_REQUEST: Failure(0),
}

# Dubbo status byte -> HTTP status, for stats and bridging.
_HTTP: Final[dict[int, int]] = {
    STATUS_OK: 200,
    STATUS_CLIENT_TIMEOUT: 504,
    STATUS_SERVER_TIMEOUT: 504,
    STATUS_BAD_REQUEST: 400,
    STATUS_BAD_RESPONSE: 502,
    STATUS_SERVICE_NOT_FOUND: 404,
    STATUS_SERVICE_ERROR: 500,
    STATUS_SERVER_ERROR: 500,
    STATUS_CLIENT_ERROR: 500,
    STATUS_THREADPOOL_EXHAUSTED: 503,
}


_NO_HEADERS: Final = Headers()


class _Attachments:
    """``RequestHead.resolve`` for one request: reads the attachments map on first use only."""

    __slots__ = ("_body", "_frame", "_max", "_values")

    def __init__(self, frame: bytes, body: BodyHead, max_entries: int) -> None:
        self._frame = frame
        self._body = body
        self._max = max_entries
        self._values: dict[str, str] | None = None

    def __call__(self, name: str) -> str | None:
        if name == "dubbo_version":
            return self._body.dubbo_version
        if name == "parameter_types":
            return self._body.parameter_types
        if name == "interface":
            return self._body.path
        values = self._values
        if values is None:
            try:
                values = read_attachments(self._frame, self._body, self._max)
            except (ValueError, RecursionError):
                values = {}
            self._values = values
        return values.get(name) or None


class DubboCodec(Codec):
    """One connection's Dubbo engine; see the module docstring for events and routing keys."""

    __slots__ = ("_buf", "_close_reported", "_closed", "_error", "_heads", "_limits", "_server", "role")

    def __init__(self, role: Role, limits: CodecLimits) -> None:
        self.role = role
        self._server = role is Role.SERVER  # an enum member lookup costs about 0.2 us: once, not per frame
        self._limits = limits
        self._buf = FrameBuffer()  # parsed in place; a frame that is a whole read is forwarded uncopied
        self._closed = False
        self._close_reported = False
        self._error: RemoteProtocolError | None = None
        # (encoded body head, its decoding): a consumer calls the same few methods over and over
        self._heads: list[tuple[bytes, BodyHead]] = []

    # -- parsing ----------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._closed:
            if data:
                raise RemoteProtocolError("dubbo: data received after the connection closed")
            return
        if not data:
            self._closed = True
            return
        self._buf.append(data)

    def next_event(self) -> Event | _NeedData:
        if self._error is not None:
            raise self._error
        try:
            buf = self._buf
            data = buf.data
            pos = buf.pos
            have = len(data) - pos
            if have <= 0 and not self._closed:  # every frame of the read was taken: the usual end of a batch
                return NEED_DATA
            if have < HEADER_LEN:
                if have > 0 and data[pos:pos + 2] != MAGIC[:have]:
                    raise RemoteProtocolError(f"dubbo: bad magic {bytes(data[pos:pos + 2]).hex()} (expected dabb)")
                return self._at_end()
            magic, flag, _status, request_id, body_len = HEADER.unpack_from(data, pos)
            if magic != MAGIC:
                raise RemoteProtocolError(f"dubbo: bad magic {magic.hex()} (expected dabb)")
            is_request = flag & FLAG_REQUEST
            total = HEADER_LEN + body_len
            if body_len < 0 or total > self._limits.max_frame_bytes:
                limit = self._limits.max_frame_bytes
                what = f"negative body length {body_len}" if body_len < 0 else (
                    f"frame of {total} bytes exceeds max_frame_bytes={limit}")
                raise RemoteProtocolError(f"dubbo: {what} (request id {request_id})",
                                          400 if body_len < 0 else 413, self._partial(flag, request_id))
            if have < total:
                return self._at_end()
            frame = buf.take(pos + total)
            if flag & FLAG_EVENT:
                # Dubbo events are heartbeats (body: serialized null) or the read-only notice; both are
                # answered locally and never forwarded.
                return Heartbeat(request_id=request_id, reply=not is_request, raw=frame, meta=flag)
            if self._server:
                if not is_request:
                    raise RemoteProtocolError(f"dubbo: a consumer sent a response (request id {request_id})")
                return self._request(frame, flag, request_id)
            if is_request:
                raise RemoteProtocolError(f"dubbo: a provider sent a request (request id {request_id}); "
                                          "provider-to-consumer calls are not supported")
            status = frame[3]
            # positional (keywords cost about as much again as the event): protocol, request_id, status,
            # http_status, headers, reason, end_stream, raw
            return ResponseHead(PROTOCOL, request_id, status, _HTTP.get(status, 500), _NO_HEADERS, "", True, frame)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _at_end(self) -> Event | _NeedData:
        if self._closed and not self._close_reported:
            self._close_reported = True
            return ConnectionClosed(clean=len(self._buf) == 0)
        return NEED_DATA

    def _partial(self, flag: int, request_id: int) -> RequestHead | None:
        if not flag & FLAG_REQUEST or flag & FLAG_EVENT or not self._server:
            return None
        return RequestHead(protocol=PROTOCOL, request_id=request_id, oneway=not flag & FLAG_TWOWAY)

    def _request(self, frame: bytes, flag: int, request_id: int) -> RequestHead:
        serialization = flag & SERIALIZATION_MASK
        if serialization != SERIALIZATION_HESSIAN2:
            raise RemoteProtocolError(
                f"dubbo: serialization id {serialization} is not supported, only hessian2 (2) "
                f"(request id {request_id})", 415, self._partial(flag, request_id))
        body = self._body_head(frame, flag, request_id)
        # positional (keywords cost about as much again as the event): protocol, request_id, service,
        # method, path, version, group, headers, oneway, end_stream, raw, timeout_ms, resolve, meta
        return RequestHead(PROTOCOL, request_id, body.path, body.method, "", body.version or "", "", _NO_HEADERS,
                           not flag & FLAG_TWOWAY, True, frame, None,
                           _Attachments(frame, body, self._limits.max_headers), body)

    def _body_head(self, frame: bytes, flag: int, request_id: int) -> BodyHead:
        """The request's body head; the decoding of an identical head seen lately is reused (the
        head's bytes alone decide its values and where the arguments start)."""
        for encoded, known in self._heads:
            if frame.startswith(encoded, HEADER_LEN):
                return known
        try:
            body = read_body_head(frame, HEADER_LEN)
        except ValueError as exc:
            raise RemoteProtocolError(f"dubbo: unreadable request body head (request id {request_id}): {exc}",
                                      400, self._partial(flag, request_id)) from None
        if body.args_offset - HEADER_LEN > self._limits.max_header_bytes:
            raise RemoteProtocolError(
                f"dubbo: request head strings take {body.args_offset - HEADER_LEN} bytes, more than "
                f"max_header_bytes={self._limits.max_header_bytes} (request id {request_id})",
                431, self._partial(flag, request_id))
        heads = self._heads
        if len(heads) >= _RECENT_HEADS:
            heads.pop()
        heads.insert(0, (frame[HEADER_LEN:body.args_offset], body))
        return body

    # -- hot upgrade ------------------------------------------------------------------------------
    def partial(self) -> bool:
        """A frame started and not complete yet."""
        return len(self._buf) > 0

    def buffered(self) -> int:
        return len(self._buf)

    def export_state(self) -> CodecState | None:
        """Frames are self-describing: no state, only the start of the next frame."""
        if self._closed or self._error is not None:
            return None
        return CodecState(b"", bytes(self._buf.data[self._buf.pos:]))

    # -- encoding ---------------------------------------------------------------------------------
    def send(self, event: Event) -> bytes:
        if isinstance(event, (RequestHead, ResponseHead)) and event.raw is not None:
            return event.raw
        if isinstance(event, Heartbeat):
            return self.heartbeat_reply(event) if not event.reply else self.heartbeat(event.request_id)
        raise LocalProtocolError(f"dubbo: cannot encode {type(event).__name__} without its raw frame")

    def request_argument(self, head: RequestHead, index: int) -> bytes | None:
        """Argument ``index``'s hessian2 bytes (Dubbo's ConsistentHashLoadBalance hashes argument 0);
        the arguments before it are skipped, none is decoded. None for an unreadable body."""
        body = head.meta
        if not isinstance(body, BodyHead) or head.raw is None:
            return None
        try:
            return argument_bytes(head.raw, body, index)
        except (ValueError, RecursionError):
            return None

    def edit_headers(self, frame: bytes, edit: HeaderEdit, request: RequestHead | None = None) -> bytes:
        """The attachments map re-encoded with ``edit`` applied (the arguments before it skipped, not
        decoded); a response gets attachments only when ``request``'s consumer reads them."""
        if len(frame) < HEADER_LEN or not frame.startswith(MAGIC):
            raise ValueError("dubbo: edit_headers needs a whole Dubbo frame")
        if frame[2] & FLAG_EVENT:
            return frame
        if frame[2] & FLAG_REQUEST:
            known = request.meta if request is not None and request.raw is frame else None
            return edit_request_attachments(frame, edit, known if isinstance(known, BodyHead) else None)
        body = request.meta if request is not None else None
        if request is not None and not isinstance(body, BodyHead) and request.raw is not None:
            body = read_body_head(request.raw, HEADER_LEN)
        readable = isinstance(body, BodyHead) and supports_response_attachments(body.dubbo_version)
        return edit_response_attachments(frame, edit, readable)

    def rewrite_request_id(self, frame: bytes, new_id: int) -> bytes:
        if len(frame) < HEADER_LEN or not frame.startswith(MAGIC):
            raise LocalProtocolError("dubbo: rewrite_request_id needs a whole Dubbo frame")
        if not 0 <= new_id <= _MAX_ID:
            raise LocalProtocolError(f"dubbo: request id {new_id} does not fit 64 bits")
        return frame[:4] + new_id.to_bytes(8, "big") + frame[12:]  # to_bytes: a compiled primitive

    def heartbeat(self, request_id: int) -> bytes:
        return heartbeat_frame(request_id)

    def heartbeat_reply(self, beat: Heartbeat) -> bytes:
        if isinstance(beat.meta, int) and not beat.meta & FLAG_TWOWAY:
            return b""
        return heartbeat_reply_frame(beat.request_id, SERIALIZATION_HESSIAN2)

    def local_reply(self, head: RequestHead, status: ReplyStatus, message: str) -> bytes:
        if head.oneway:
            return b""
        code, reason = _REPLY.get(status, (STATUS_SERVICE_ERROR, "internal error"))
        text = f"{status.http_status}|{reason}: {message}" if message else f"{status.http_status}|{reason}"
        return encode_frame(SERIALIZATION_HESSIAN2, code, head.request_id, encode_string(text))

    def map_status(self, status: int) -> int:
        return _HTTP.get(status, 500)

    def classify(self, head: ResponseHead) -> Failure:
        return _FAILURES.get(head.status, Failure.SERVER_ERROR)


class DubboCodecFactory(CodecFactory):
    """The ``dubbo`` protocol: multiplexed, 64-bit request ids, sniffed by the magic ``0xdabb``."""

    name: ClassVar[str] = PROTOCOL
    multiplexed: ClassVar[bool] = True
    sniff_bytes: ClassVar[int] = 2
    request_id_bits: ClassVar[int] = 64
    header_mutation: ClassVar[bool] = True  # ``DubboCodec.edit_headers``: attachments

    def sniff(self, prefix: bytes) -> Sniff:
        if not prefix:
            return Sniff.NEED_MORE
        if prefix[0] != MAGIC[0]:
            return Sniff.NO
        if len(prefix) < 2:
            return Sniff.NEED_MORE
        return Sniff.MATCH if prefix[1] == MAGIC[1] else Sniff.NO

    def new_codec(self, role: Role, limits: CodecLimits) -> DubboCodec:
        return DubboCodec(role, limits)
