"""HTTP/2 codec for plain HTTP/2, gRPC and Dubbo 3 Triple (h2c prior knowledge, or h2 after ALPN).

Pure: bytes in, events out. No sockets, no event loop, no logging. Frame parsing, HPACK, stream
states, windows, SETTINGS, PING and GOAWAY belong to the project's sans-IO connection machine
(``machine``); this module owns the mapping between the machine's events and sofamesh events,
routing keys (gRPC service and method from ``:path``, Triple version and group, ``grpc-timeout``),
end-to-end flow control bookkeeping and local replies.

How the kernel drives it (one codec per connection, many streams):

* ``receive_data(chunk)``, then ``next_event()`` until ``NEED_DATA``, then write
  ``data_to_send()``: receiving produces bytes of its own (SETTINGS ACK, PING ACK, WINDOW_UPDATE,
  RST_STREAM for frames on dead streams, GOAWAY after a protocol error). Every method that returns
  ``bytes`` (``send``, ``acknowledge``, ``reset``, ``local_reply``, ``heartbeat``...) returns
  everything queued so far, in order, so nothing is ever written twice or out of order.
* Events carry the HTTP/2 stream id: ``RequestHead.request_id``, ``ResponseHead.request_id``,
  ``BodyChunk.stream_id``, ``EndOfMessage.stream_id``, ``StreamReset.stream_id``. A head with
  ``end_stream=True`` is not followed by ``EndOfMessage``; trailers come as
  ``EndOfMessage(trailers=...)``.
* Flow control is end to end: a received ``BodyChunk`` keeps its bytes in the peer's window until
  ``acknowledge(stream_id, len(data))`` is called, which the kernel does once the bytes were
  handed to the other side. Sending never buffers: ``send(BodyChunk)`` accepts at most
  ``sendable(stream_id)`` bytes; the rest waits in the kernel for ``WindowOpened``.
* RST_STREAM from the peer is the ``StreamReset`` event; ``reset(stream_id)`` sends one.
  GOAWAY from the peer is ``GoAway(last_request_id=<last stream id>)``; the streams we opened above
  it (never processed by the peer) follow as ``StreamReset(REFUSED_STREAM)``, safe to send again on
  another connection; ``send(GoAway())`` sends one.
  PING from the peer is answered inside the codec (the ACK is in ``data_to_send()``); the answer to
  ``heartbeat(n)`` comes back as ``Heartbeat(request_id=n, reply=True)``.
* A request whose header list is over ``CodecLimits.max_header_bytes`` is answered 431 on its own
  stream (RFC 9113 10.5.1); the connection serves on. An invalid header block (RFC 9113 8.2, 8.3)
  ends the connection with GOAWAY(PROTOCOL_ERROR), or only its stream with RST_STREAM(PROTOCOL_ERROR)
  when ``Http2Options.stream_error_on_invalid_http_message`` (Envoy's override of the same name).
  A stream error the peer made (RST_STREAM sent by the machine) ends the stream for the kernel too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import ClassVar, Final, TypeVar

from sofamesh.core.codec import Codec, CodecFactory, CodecLimits, Failure, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfMessage,
    Event,
    GoAway,
    Heartbeat,
    RequestHead,
    ResponseHead,
    _NeedData,
)
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.http2 import frames, grpc, machine
from sofamesh.plugins.protocols.http2.events import StreamReset, WindowOpened
from sofamesh.plugins.protocols.http2.fields import (
    REQUEST,
    RESPONSE,
    TRAILERS,
    LastBlock,
    MalformedFields,
    block_key,
    field_block,
    keep_block,
    keepable,
    known_block,
    received_fields,
    wire,
)
from sofamesh.plugins.protocols.http2.fields import (
    TRIM as _TRIM,
)

PROTOCOL: Final = "http2"
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ALPN_PROTOCOLS: Final = ("h2",)
SETTINGS_TIMEOUT_S: Final = 10.0  # how long the peer has to ACK our SETTINGS (nghttpx's default)

_REQUEST_PSEUDO: Final = {k: k.encode() for k in (":method", ":scheme", ":authority", ":path")}
_DEFAULT_WINDOW: Final = 65_535
_OVERLOADED: Final = (b"x-envoy-overloaded", b"true")  # circuit-breaker overflow, as Envoy marks it
_MARK: Final = b"x-sofamesh-local-reply"  # names the ReplyStatus on answers the proxy made itself, as http1 does

Http2Event = Event | StreamReset | WindowOpened


# The (service, method) of gRPC/Triple paths already split: a client calls few methods, each many times.
_TARGETS: dict[str, tuple[str, str]] = {}
_TARGETS_MAX: Final = 1024


def _rpc_target(path: str) -> tuple[str, str] | None:
    """(service, method) from a gRPC/Triple ``:path`` of the form ``/package.Service/Method``."""
    known = _TARGETS.get(path)
    if known is not None:
        return known
    if path[:1] != "/" or "?" in path:
        return None
    rest = path[1:]
    cut = rest.find("/")
    if cut <= 0 or cut == len(rest) - 1 or "/" in rest[cut + 1 :]:
        return None
    target = (rest[:cut], rest[cut + 1 :])
    if len(path) <= 256:
        if len(_TARGETS) >= _TARGETS_MAX:
            _TARGETS.clear()
        _TARGETS[path] = target
    return target


class _Aliases:
    """``RequestHead.resolve`` for HTTP/2: route keys it carries under another name (``host`` is
    ``:authority``). Compares by value, so equal requests give equal heads."""

    __slots__ = ("authority",)

    def __init__(self, authority: str) -> None:
        self.authority = authority

    def __call__(self, name: str) -> str | None:
        if name in ("host", "authority"):
            return self.authority or None
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Aliases) and other.authority == self.authority

    def __hash__(self) -> int:
        return hash(self.authority)

    def __repr__(self) -> str:
        return f"_Aliases({self.authority!r})"


def _request_pseudo(head: RequestHead) -> list[tuple[bytes, bytes]]:
    """The pseudo-header fields of a request we send: the downstream's, in its order (some peers are
    picky), the missing ones filled in from the head."""
    seen: dict[str, str] = {}
    host = ""
    for k, v in head.headers:
        if k[:1] == ":":
            if k in _REQUEST_PSEUDO and k not in seen:
                seen[k] = v
        elif not host and len(k) == 4 and k.lower() == "host":
            host = v
    defaults = {
        ":method": head.method or "GET",
        ":scheme": "http",
        ":authority": host or head.service,
        ":path": head.path or "/",
    }
    first = [(_REQUEST_PSEUDO[k], wire((v or defaults[k]).strip(_TRIM))) for k, v in seen.items()]
    if len(seen) < len(_REQUEST_PSEUDO):
        first += [(b, wire(defaults[k].strip(_TRIM))) for k, b in _REQUEST_PSEUDO.items() if k not in seen]
    return first


def _is_rpc(ctype: str | None) -> bool:
    """Whether a request with this content-type is gRPC or Triple (routed on service/method)."""
    if grpc.is_grpc(ctype):
        return True
    return ctype is not None and ctype[:18].lower() == "application/triple"


class _RouteKeys:
    """What a received request block gives every head made from it: its checked fields as text and
    the routing keys read from them."""

    __slots__ = ("group", "headers", "method", "path", "resolve", "service", "timeout_ms", "version")

    def __init__(self, headers: Headers, service: str, method: str, path: str, version: str,
                 group: str, timeout_ms: int | None, resolve: _Aliases) -> None:  # fmt: skip
        self.headers = headers  # one object for every head of the block: Headers are never changed in place
        self.service = service
        self.method = method
        self.path = path
        self.version = version
        self.group = group
        self.timeout_ms = timeout_ms
        self.resolve = resolve


def _route_keys(raw: list[tuple[bytes, bytes]]) -> _RouteKeys:
    """A request block checked (``MalformedFields`` when it breaks the rules) and its routing keys."""
    fields = received_fields(raw, REQUEST)
    # received_fields checked the names are lower case: one dict answers every lookup (first value wins).
    first: dict[str, str] = {}
    for k, v in fields:
        first.setdefault(k, v)
    get = first.get
    path = get(":path") or ""
    authority = get(":authority") or get("host") or ""
    target = _rpc_target(path) if _is_rpc(get("content-type")) else None
    if target is None:
        service = authority
        method = get(":method") or ""
    else:
        service, method = target
    version = get("tri-service-version") or ""
    group = get("tri-service-group") or ""
    timeout_ms = grpc.parse_timeout(get("grpc-timeout"))
    return _RouteKeys(Headers(fields), service, method, path, version, group, timeout_ms, _Aliases(authority))


class _StatusKeys:
    """What a received response block gives every head made from it: its checked fields as text and
    the statuses read from them."""

    __slots__ = ("headers", "http_status", "status", "trailers_only_status")

    def __init__(self, headers: Headers, status: int, http_status: int, trailers_only_status: int) -> None:
        self.headers = headers  # one object for every head of the block, as ``_RouteKeys.headers``
        self.status = status
        self.http_status = http_status
        self.trailers_only_status = trailers_only_status  # the HTTP status when the block ends the stream, or 0


def _status_keys(raw: list[tuple[bytes, bytes]]) -> _StatusKeys:
    """A response block checked (``MalformedFields`` when it breaks the rules) and its statuses."""
    headers = Headers(received_fields(raw, RESPONSE))
    status = int(headers.get(":status") or 0)
    http_status = status if 100 <= status <= 599 else 502
    gstatus = headers.get("grpc-status")
    only = 0
    if http_status == 200 and gstatus is not None and gstatus.isdigit():
        only = grpc.http_status_of(int(gstatus))
    return _StatusKeys(headers, status, http_status, only)


# Request blocks already read, by their fields as the HPACK decoder gave them: a client sends the
# same block on every call (the decoder hands back the same field objects for a block it read
# before). Only blocks ``keepable`` says are small; emptied when full.
_REQUESTS: dict[tuple[tuple[bytes, bytes], ...], _RouteKeys] = {}
_RESPONSES: dict[tuple[tuple[bytes, bytes], ...], _StatusKeys] = {}  # response blocks, the same way
_TRAILERS: dict[tuple[tuple[bytes, bytes], ...], Headers] = {}  # trailer blocks, the same way
_KEPT_MAX: Final = 64


def _trailer_fields(raw: list[tuple[bytes, bytes]]) -> Headers:
    return Headers(received_fields(raw, TRAILERS))

_K = TypeVar("_K")


def _kept(
    table: dict[tuple[tuple[bytes, bytes], ...], _K],
    raw: list[tuple[bytes, bytes]],
    read: Callable[[list[tuple[bytes, bytes]]], _K],
) -> _K:
    """What ``read`` gives for the block ``raw``, kept in ``table`` when the block is small."""
    key = tuple(raw)
    known = table.get(key)
    if known is None:
        known = read(raw)  # a malformed block raises here: never kept
        if keepable(raw):
            if len(table) >= _KEPT_MAX:
                table.clear()
            table[key] = known
    return known


class _Stream:
    """What the codec remembers about one open stream."""

    __slots__ = (
        "end_in_head",
        "head",
        "local_done",
        "received",
        "remote_done",
        "response_started",
        "trailers_seen",
        "unacked",
    )

    def __init__(self, head: RequestHead | None = None) -> None:
        self.head = head  # the request (server role), for a local reply made by the codec itself
        self.end_in_head = False  # the peer's HEADERS carried END_STREAM: no EndOfMessage follows
        self.trailers_seen = False  # EndOfMessage already emitted with trailers
        self.remote_done = False
        self.local_done = False
        self.response_started = False  # we sent the first HEADERS on it
        self.unacked = 0  # flow-controlled bytes received and not yet acknowledged
        self.received = 0  # body bytes received, checked against CodecLimits.max_body_bytes


class Http2Codec(Codec):
    """One HTTP/2 connection in one role. See the module docstring for how the kernel drives it."""

    retriable_success: ClassVar[bool] = True  # a trailers-only gRPC UNAVAILABLE is a 200 (``classify``)
    graceful_goaway: ClassVar[bool] = True  # the machine serves streams up to the GOAWAY's last id
    handshake_timeout: ClassVar[float] = SETTINGS_TIMEOUT_S

    def __init__(
        self,
        role: Role,
        limits: CodecLimits | None = None,
        *,
        initial_window_size: int = 256 * 1024,  # per stream: what one slow stream may hold in the proxy
        connection_window_size: int = 16 * 1024 * 1024,  # whole connection: bounds memory per connection
        max_concurrent_streams: int = 1024,  # streams the peer may open at once; the tests run 500 on one
        max_frame_size: int = 16_384,  # RFC 9113 default; bigger frames save little in Python
        max_inbound_window_update_frames_per_data_frame_sent: int = 10,  # Envoy's flood limit
        max_outbound_frames: int = 10_000,
        max_outbound_control_frames: int = 1000,
        max_inbound_priority_frames_per_stream: int = 100,
        max_consecutive_inbound_frames_with_empty_payload: int = 1,
        hpack_table_size: int = 4096,  # our SETTINGS_HEADER_TABLE_SIZE (Envoy's hpack_table_size)
        custom_settings: tuple[tuple[int, int], ...] = (),  # more SETTINGS entries (custom_settings_parameters)
        stream_error_on_invalid_http_message: bool = False,  # Envoy's default: the connection ends
    ) -> None:
        self.role = role
        self._limits = limits if limits is not None else CodecLimits()
        self._machine = machine.Machine(
            role is Role.CLIENT,
            initial_window_size=initial_window_size,
            connection_window_size=connection_window_size,
            max_concurrent_streams=max_concurrent_streams,
            max_frame_size=max_frame_size,
            max_header_list_size=self._limits.max_header_bytes,
            max_inbound_window_update_frames_per_data_frame_sent=max_inbound_window_update_frames_per_data_frame_sent,
            max_outbound_frames=max_outbound_frames,
            max_outbound_control_frames=max_outbound_control_frames,
            max_inbound_priority_frames_per_stream=max_inbound_priority_frames_per_stream,
            max_empty_frames=max_consecutive_inbound_frames_with_empty_payload,
            header_table_size=hpack_table_size,
            custom_settings=custom_settings,
        )
        self._stream_error_on_invalid = stream_error_on_invalid_http_message
        self._streams: dict[int, _Stream] = {}
        self._events: deque[Http2Event] = deque()
        self._inbox: list[bytes] = []
        self._eof = False
        self._eof_reported = False
        self._error: RemoteProtocolError | None = None
        self._last_request = LastBlock()  # the blocks sent last, found again by their Headers object
        self._last_response = LastBlock()
        self._last_trailers = LastBlock()

    # -- receiving --------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if data:
            self._inbox.append(data)
        else:
            self._eof = True

    def next_event(self) -> Http2Event | _NeedData:
        """The next event, or ``NEED_DATA``; then write ``data_to_send()``. Besides the core events
        this returns ``StreamReset`` and ``WindowOpened``."""
        while True:
            if self._events:
                return self._events.popleft()
            if self._error is not None:
                raise self._error
            if not self._inbox:
                break
            data = b"".join(self._inbox) if len(self._inbox) > 1 else self._inbox[0]
            self._inbox.clear()
            try:
                for ev in self._machine.receive_data(data):
                    self._on_event(ev)
            except MalformedFields as malformed:
                self._machine.goaway(frames.PROTOCOL_ERROR, -1, b"malformed header block")
                self._error = RemoteProtocolError(f"http2: {malformed}", status_hint=400)
        if self._eof and not self._eof_reported:
            self._eof_reported = True
            return ConnectionClosed(clean=not self._streams)
        return NEED_DATA

    def partial(self) -> bool:
        """A frame started and not complete yet, or a header block waiting for its CONTINUATION."""
        return bool(self._inbox) or self._machine.partial

    def buffered(self) -> int:
        return sum(map(len, self._inbox)) + self._machine.buffered

    def handshake_overdue(self) -> bytes | None:
        """Our SETTINGS still unacknowledged ``handshake_timeout`` seconds in: GOAWAY(SETTINGS_TIMEOUT)."""
        if not self._machine.settings_overdue():
            return None
        self.keep_alive = False
        return self._machine.data_to_send()

    def write_blocked(self, blocked: bool) -> None:
        self._machine.write_blocked(blocked)

    def _on_event(self, ev: machine.Event) -> None:
        t = type(ev)
        if t is machine.DataReceived:
            assert isinstance(ev, machine.DataReceived)
            if ev.data:
                self._data(ev.stream_id, ev.data)
            if ev.end_stream:
                self._ended(ev.stream_id)
        elif t is machine.HeadersReceived:
            assert isinstance(ev, machine.HeadersReceived)
            self._on_headers(ev)
        elif t is machine.WindowUpdated:
            assert isinstance(ev, machine.WindowUpdated)
            self._events.append(WindowOpened(ev.stream_id))
        elif t is machine.StreamReset:
            assert isinstance(ev, machine.StreamReset)
            if self._drop(ev.stream_id):
                code = ev.error_code
                self._events.append(StreamReset(ev.stream_id, code, ev.message or frames.error_name(code)))
        elif t is machine.PingAcknowledged:
            assert isinstance(ev, machine.PingAcknowledged)
            self._events.append(Heartbeat(request_id=int.from_bytes(ev.opaque, "big"), reply=True))
        elif t is machine.SettingsChanged:
            assert isinstance(ev, machine.SettingsChanged)
            if ev.window_grew:
                self._events.append(WindowOpened(0))
        elif t is machine.GoAwayReceived:
            assert isinstance(ev, machine.GoAwayReceived)
            self.keep_alive = False
            name = frames.error_name(ev.error_code)
            extra = ev.debug.decode("utf-8", "replace")
            self._events.append(GoAway(reason=f"{name}: {extra}" if extra else name, last_request_id=ev.last_stream_id))
            for sid in ev.refused:  # never processed by the peer: safe to send again elsewhere
                if self._drop(sid):
                    reason = f"refused: above the peer's GOAWAY last stream id {ev.last_stream_id}"
                    self._events.append(StreamReset(sid, frames.REFUSED_STREAM, reason))
        elif t is machine.ConnectionFailed:
            assert isinstance(ev, machine.ConnectionFailed)
            self.keep_alive = False
            self._error = RemoteProtocolError(f"http2: {ev.message}", status_hint=400)

    def _on_headers(self, ev: machine.HeadersReceived) -> None:
        sid = ev.stream_id
        kind = ev.kind
        try:
            if kind == machine.REQUEST:
                if ev.too_large:
                    self._refuse_too_large(sid, ev.end_stream)
                    return
                self._request(sid, ev.fields, ev.end_stream)
                if ev.end_stream:
                    self._ended(sid)
            elif kind == machine.RESPONSE:
                if ev.too_large:
                    if self._drop(sid):
                        self._machine.reset_stream(sid, frames.CANCEL)
                        limit = self._limits.max_header_bytes
                        self._events.append(StreamReset(sid, frames.CANCEL, f"response header list over {limit} bytes"))
                    return
                self._response(sid, ev.fields, ev.end_stream)
                if ev.end_stream:
                    self._ended(sid)
            elif kind == machine.TRAILERS:
                self._trailers(sid, ev.fields)
                self._ended(sid)
            # INFORMATIONAL (1xx) responses carry nothing the proxy acts on.
        except MalformedFields as malformed:
            if not self._stream_error_on_invalid:
                raise  # Envoy's default: GOAWAY(PROTOCOL_ERROR) for the whole connection (next_event)
            self._malformed(sid, str(malformed))

    def _malformed(self, sid: int, message: str) -> None:
        """An invalid header block on stream ``sid`` (RFC 9113 8.1.1) ends that stream alone with
        RST_STREAM(PROTOCOL_ERROR) (``stream_error_on_invalid_http_message``); a request the kernel
        never saw goes no further, a response or trailers end the kernel's stream as a reset."""
        known = self._drop(sid)
        self._machine.reset_stream(sid, frames.PROTOCOL_ERROR)
        if known:
            self._events.append(StreamReset(sid, frames.PROTOCOL_ERROR, f"invalid header block: {message}"))

    def _refuse_too_large(self, sid: int, ended: bool) -> None:
        """431 on this stream alone; the header list was decoded whole, so the connection goes on."""
        fields = [
            (b":status", b"431"),
            (b"content-length", b"0"),
            (_MARK, ReplyStatus.HEADERS_TOO_LARGE.name.lower().encode()),
        ]
        self._machine.send_headers(sid, fields, end_stream=True)
        if not ended:
            self._machine.reset_stream(sid, frames.NO_ERROR)

    def _trailers(self, sid: int, raw: list[tuple[bytes, bytes]]) -> None:
        trailers = _kept(_TRAILERS, raw, _trailer_fields)
        st = self._streams.get(sid)
        if st is not None:
            st.trailers_seen = True
            self._events.append(EndOfMessage(trailers=trailers, stream_id=sid))

    def _ended(self, sid: int) -> None:
        """The peer ended stream ``sid`` (END_STREAM on its last frame)."""
        st = self._streams.get(sid)
        if st is not None:
            st.remote_done = True
            if not (st.end_in_head or st.trailers_seen):
                self._events.append(EndOfMessage(stream_id=sid))
            self._forget_if_done(sid, st)

    def _request(self, sid: int, raw: list[tuple[bytes, bytes]], ended: bool) -> None:
        known = _kept(_REQUESTS, raw, _route_keys)
        st = _Stream()
        st.end_in_head = st.remote_done = ended
        self._streams[sid] = st
        head = RequestHead(PROTOCOL, sid, known.service, known.method, known.path, known.version, known.group,
                           known.headers, False, ended, None, known.timeout_ms, known.resolve)  # fmt: skip
        st.head = head
        if len(raw) > self._limits.max_headers:
            # Not a connection error: answer this stream alone, as a request over a limit.
            limit = self._limits.max_headers
            self._reply(head, ReplyStatus.HEADERS_TOO_LARGE, f"more than {limit} headers")
            return
        self._events.append(head)

    def _response(self, sid: int, raw: list[tuple[bytes, bytes]], ended: bool) -> None:
        known = _kept(_RESPONSES, raw, _status_keys)
        st = self._streams.get(sid)
        if st is None:
            return
        st.end_in_head = ended
        if ended:
            st.remote_done = True
        status = known.status
        http_status = known.http_status
        if ended and known.trailers_only_status:
            http_status = known.trailers_only_status  # trailers-only gRPC answer
        self._events.append(ResponseHead(PROTOCOL, sid, status, http_status, known.headers, "", ended))
        if ended:
            self._forget_if_done(sid, st)

    def _data(self, sid: int, data: bytes) -> None:
        """``data`` received on ``sid`` (padding removed; the machine gave its share back already)."""
        st = self._streams.get(sid)
        if st is None:
            # A stream we already answered or reset: nobody will forward these bytes.
            self._machine.acknowledge(sid, len(data))
            return
        st.unacked += len(data)
        st.received += len(data)
        limit = self._limits.max_body_bytes
        if limit and st.received > limit:
            # Only this stream is refused; StreamReset tells the kernel to drop what it holds of it.
            if st.head is not None:
                self._reply(st.head, ReplyStatus.PAYLOAD_TOO_LARGE, f"body larger than {limit} bytes")
            if self._drop(sid):
                self._machine.reset_stream(sid, frames.CANCEL)
            self._events.append(StreamReset(sid, frames.CANCEL, f"body over {limit} bytes"))
            return
        self._events.append(BodyChunk(data=data, stream_id=sid))

    # -- stream bookkeeping -----------------------------------------------------------------------
    def _forget_if_done(self, sid: int, st: _Stream) -> None:
        if st.local_done and st.remote_done and not st.unacked:
            del self._streams[sid]

    def _drop(self, sid: int) -> bool:
        """Forget a stream, returning its unacknowledged bytes to the connection window."""
        st = self._streams.pop(sid, None)
        if st is None:
            return False
        if st.unacked:
            self._machine.acknowledge(sid, st.unacked)
        return True

    def _local_end(self, sid: int) -> None:
        st = self._streams.get(sid)
        if st is not None:
            st.local_done = True
            self._forget_if_done(sid, st)

    # -- sending ----------------------------------------------------------------------------------
    def send(self, event: Event) -> bytes:
        m = self._machine
        try:
            if isinstance(event, BodyChunk):
                self._send_body(event.stream_id, event.data)
            elif isinstance(event, EndOfMessage):
                self._send_end(event)
            elif isinstance(event, ResponseHead):
                self._send_response(event)
            elif isinstance(event, RequestHead):
                self._send_request(event)
            elif isinstance(event, Heartbeat):
                if not event.reply:
                    m.ping(event.request_id.to_bytes(8, "big"))
            elif isinstance(event, GoAway):
                self.keep_alive = False
                last = -1 if event.last_request_id is None else event.last_request_id
                m.goaway(frames.NO_ERROR, last, event.reason.encode("utf-8"))
            elif not isinstance(event, ConnectionClosed):
                raise LocalProtocolError(f"http2: cannot send {type(event).__name__}")
        except machine.StreamClosedError as closed:
            if isinstance(event, (EndOfMessage, BodyChunk)):
                sid = event.stream_id
            elif isinstance(event, (RequestHead, ResponseHead)):
                sid = event.request_id
            else:
                sid = 0
            if sid in self._streams:
                raise LocalProtocolError(f"http2: cannot send {type(event).__name__}: {closed}") from closed
            # The peer reset the stream and its StreamReset is on the way to the kernel: drop quietly.
        except machine.UsageError as exc:  # not ``closed``'s name: mypyc types one per function
            raise LocalProtocolError(f"http2: cannot send {type(event).__name__}: {exc}") from exc
        return m.data_to_send()

    def _send_request(self, head: RequestHead) -> None:
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("http2: a server-role codec sends responses, not requests")
        sid = head.request_id
        if sid <= 0 or sid % 2 == 0:
            raise LocalProtocolError(f"http2: request stream id {sid} is not a client stream id; use new_stream_id()")
        # The block is made of the head's headers, method, service and path only: kept whole.
        headers = head.headers
        pseudo = (head.method, head.service, head.path)
        last = self._last_request
        fields = last.find(headers, pseudo)
        if fields is None:
            key = block_key(pseudo, headers)
            built = known_block(key) if key is not None else None
            if built is None:
                built = field_block(headers, _request_pseudo(head))
                if key is not None:
                    keep_block(key, built)
            fields = last.keep(headers, pseudo, built)
        st = _Stream()
        st.local_done = head.end_stream
        self._streams[sid] = st
        self._machine.send_headers(sid, fields, end_stream=head.end_stream)

    def _send_response(self, head: ResponseHead) -> None:
        if self.role is not Role.SERVER:
            raise LocalProtocolError("http2: a client-role codec sends requests, not responses")
        sid = head.request_id
        # The field is the status (a filter may have changed it); a stale ":status" header is dropped.
        headers = head.headers
        last = self._last_response
        fields = last.find(headers, head.status)
        if fields is None:
            fields = last.keep(headers, head.status, field_block(headers, [(b":status", wire(str(head.status)))]))
        self._machine.send_headers(sid, fields, end_stream=head.end_stream)
        st = self._streams.get(sid)
        if st is not None:
            st.response_started = True
        if head.end_stream:
            self._local_end(sid)

    def _send_body(self, sid: int, data: bytes, last: bool = False) -> None:
        room = self.sendable(sid)
        if len(data) > room:
            raise LocalProtocolError(
                f"http2: {len(data)} bytes on stream {sid} exceed its send window of {room}; "
                "send sendable() bytes and wait for WindowOpened"
            )
        self._machine.send_data(sid, data, last)  # split into frames of the peer's size by the machine

    def send_last(self, chunk: BodyChunk) -> bytes:
        """The body's last chunk with END_STREAM on its (last) DATA frame: no empty DATA after it."""
        sid = chunk.stream_id
        try:
            self._send_body(sid, chunk.data, True)
            self._local_end(sid)
        except machine.StreamClosedError as closed:
            if sid in self._streams:
                raise LocalProtocolError(f"http2: cannot send BodyChunk: {closed}") from closed
            # The peer reset the stream and its StreamReset is on the way to the kernel: drop quietly.
        except machine.UsageError as exc:
            raise LocalProtocolError(f"http2: cannot send BodyChunk: {exc}") from exc
        return self._machine.data_to_send()

    def end_follows(self, stream_id: int) -> bool:
        """The DATA frame of ``stream_id`` just returned carried END_STREAM (no trailers)."""
        events = self._events
        if not events:
            return False
        ev = events[0]
        return isinstance(ev, EndOfMessage) and ev.stream_id == stream_id and not ev.trailers

    def _send_end(self, end: EndOfMessage) -> None:
        sid = end.stream_id
        trailers = end.trailers
        if trailers:
            last = self._last_trailers
            fields = last.find(trailers, None)
            if fields is None:
                fields = last.keep(trailers, None, field_block(trailers, []))
            self._machine.send_headers(sid, fields, end_stream=True)
        else:
            self._machine.end_stream(sid)
        self._local_end(sid)

    # -- flow control, streams, connection --------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes the codec produced on its own (SETTINGS, their ACKs, PING ACKs, WINDOW_UPDATEs,
        RST_STREAMs, GOAWAY): write them after every ``next_event()`` loop."""
        return self._machine.data_to_send()

    def sendable(self, stream_id: int) -> int:
        """How many body bytes ``send(BodyChunk)`` accepts on ``stream_id`` now (stream and
        connection windows); 0 for a closed or unknown stream."""
        return self._machine.sendable(stream_id)

    def acknowledge(self, stream_id: int, nbytes: int) -> bytes:
        """Give ``nbytes`` of a stream's received body back to the peer's window, once the kernel
        handed them to the other side. Returns the bytes to write (WINDOW_UPDATE frames, batched by
        the machine until half a window has built up)."""
        st = self._streams.get(stream_id)
        if st is None or nbytes <= 0:
            return self._machine.data_to_send()
        nbytes = min(nbytes, st.unacked)
        st.unacked -= nbytes
        self._machine.acknowledge(stream_id, nbytes)
        self._forget_if_done(stream_id, st)
        return self._machine.data_to_send()

    def reset(self, stream_id: int, error_code: int = frames.CANCEL) -> bytes:
        """Send RST_STREAM on ``stream_id`` (default CANCEL) and forget the stream; bytes still
        unacknowledged on it go back to the connection window. A dead stream is left alone."""
        if self._drop(stream_id):
            self._machine.reset_stream(stream_id, error_code)  # nothing if the machine closed it already
        return self._machine.data_to_send()

    def new_stream_id(self) -> int:
        """The id for the next request this client-role codec opens; use it before opening another."""
        return self._machine.next_stream_id

    @property
    def open_streams(self) -> int:
        """Streams this codec still tracks (open in at least one direction, or not fully acknowledged)."""
        return len(self._streams)

    @property
    def max_outbound_streams(self) -> int:
        """SETTINGS_MAX_CONCURRENT_STREAMS the peer allows us (a pool opens another connection past it)."""
        return self._machine.remote_max_concurrent_streams

    def heartbeat(self, request_id: int) -> bytes:
        """A PING carrying ``request_id`` (8 bytes); its ACK comes back as ``Heartbeat(reply=True)``."""
        self._machine.ping((request_id & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big"))
        return self._machine.data_to_send()

    def heartbeat_reply(self, beat: Heartbeat) -> bytes:
        """PINGs are acknowledged inside the codec; this only returns what is queued."""
        return self._machine.data_to_send()

    # -- replies the proxy makes itself -----------------------------------------------------------
    def local_reply(self, head: RequestHead, status: ReplyStatus, message: str) -> bytes:
        """Answer stream ``head.request_id`` and return all bytes to write.

        gRPC and Triple requests get a trailers-only response (``:status 200``, ``grpc-status`` from
        ``status.grpc_status``, percent-encoded ``grpc-message``); if the response headers were
        already sent, the same fields go out as trailers. Other requests get ``status.http_status``
        with a ``text/plain`` body (or RST_STREAM INTERNAL_ERROR when a response already started).
        If the client is still sending, RST_STREAM NO_ERROR follows (RFC 9113 8.1) to stop it.
        """
        if self.role is not Role.SERVER:
            raise LocalProtocolError("http2: local replies are made by the server-role codec")
        self._reply(head, status, message)
        return self._machine.data_to_send()

    def _reply(self, head: RequestHead, status: ReplyStatus, message: str) -> None:
        sid = head.request_id
        st = self._streams.get(sid)
        if st is None or st.local_done:
            return
        conn = self._machine
        mark = status.name.lower().encode()
        try:
            if _is_rpc(head.headers.get("content-type")):
                fields = [
                    (b"grpc-status", str(status.grpc_status).encode()),
                    (b"grpc-message", grpc.encode_message(message).encode()),
                ]
                if not st.response_started:
                    ctype = wire(head.headers.get("content-type") or "application/grpc")
                    fields = [(b":status", b"200"), (b"content-type", ctype), *fields, (_MARK, mark)]
                    if status is ReplyStatus.UPSTREAM_OVERFLOW or status is ReplyStatus.OVERLOAD:
                        fields.append(_OVERLOADED)
                conn.send_headers(sid, fields, end_stream=True)
            elif st.response_started:
                self._drop(sid)
                conn.reset_stream(sid, frames.INTERNAL_ERROR)
                return
            else:
                body = (message + "\n").encode("utf-8")[: max(0, self.sendable(sid))]
                fields = [
                    (b":status", str(status.http_status).encode()),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (_MARK, mark),
                ]
                if status is ReplyStatus.UPSTREAM_OVERFLOW or status is ReplyStatus.OVERLOAD:
                    fields.append(_OVERLOADED)
                conn.send_headers(sid, fields, end_stream=not body)
                if body:
                    conn.send_data(sid, body, end_stream=True)
        except machine.UsageError:
            self._drop(sid)  # the stream died under us (reset by the peer): nothing to answer
            return
        st.response_started = st.local_done = True
        if not st.remote_done:
            self._drop(sid)
            conn.reset_stream(sid, frames.NO_ERROR)
        else:
            self._forget_if_done(sid, st)

    def map_status(self, status: int) -> int:
        return status

    def classify(self, head: ResponseHead) -> Failure:
        """HTTP's classes; a trailers-only gRPC UNAVAILABLE is also ``RETRIABLE`` (nothing ran)."""
        f = super().classify(head)
        headers = head.headers
        if headers.get("x-envoy-overloaded") is not None:
            f |= Failure.OVERLOADED
        elif head.end_stream and headers.get("grpc-status") == "14":
            f |= Failure.RETRIABLE
        return f


class Http2CodecFactory(CodecFactory):
    """``http2``: h2c sniffed by the client connection preface; TLS listeners select it by ALPN ``h2``."""

    name: ClassVar[str] = PROTOCOL
    multiplexed: ClassVar[bool] = True  # many streams per connection ...
    streaming: ClassVar[bool] = True  # ... with bodies and flow control: heads have raw=None, ids are stream ids
    sniff_bytes: ClassVar[int] = len(PREFACE)
    request_id_bits: ClassVar[int] = 31
    alpn_protocols: ClassVar[tuple[str, ...]] = ALPN_PROTOCOLS
    header_mutation: ClassVar[bool] = True  # heads are re-encoded (gRPC and Triple metadata are headers)

    def sniff(self, prefix: bytes) -> Sniff:
        n = min(len(prefix), len(PREFACE))
        if prefix[:n] != PREFACE[:n]:
            return Sniff.NO
        return Sniff.MATCH if n == len(PREFACE) else Sniff.NEED_MORE

    def new_codec(self, role: Role, limits: CodecLimits) -> Http2Codec:
        """A codec with ``limits.http2``: the listener's or cluster's ``http2_protocol_options``."""
        o = limits.http2
        return Http2Codec(
            role,
            limits,
            initial_window_size=o.initial_stream_window_size,
            connection_window_size=o.initial_connection_window_size,
            max_concurrent_streams=o.max_concurrent_streams,
            max_inbound_window_update_frames_per_data_frame_sent=o.max_inbound_window_update_frames_per_data_frame_sent,
            max_outbound_frames=o.max_outbound_frames,
            max_outbound_control_frames=o.max_outbound_control_frames,
            max_inbound_priority_frames_per_stream=o.max_inbound_priority_frames_per_stream,
            max_consecutive_inbound_frames_with_empty_payload=o.max_consecutive_inbound_frames_with_empty_payload,
            hpack_table_size=o.hpack_table_size,
            custom_settings=o.custom_settings,
            stream_error_on_invalid_http_message=o.stream_error_on_invalid_http_message,
        )


__all__ = ["ALPN_PROTOCOLS", "PREFACE", "PROTOCOL", "Http2Codec", "Http2CodecFactory", "Http2Event"]
