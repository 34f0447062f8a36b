"""Bolt v1/v2 codec. Pure: bytes in, events out. No sockets, no event loop, no logging.

One ``BoltCodec`` per connection. ``Role.SERVER`` faces a downstream SOFA client and emits
``RequestHead(end_stream=True, raw=<whole frame>)`` and ``Heartbeat``; ``Role.CLIENT`` faces an
upstream SOFA server and emits ``ResponseHead(raw=<whole frame>)`` and ``Heartbeat``. Frames are
forwarded whole; only the request id is rewritten (with the v2 CRC32 recomputed), and the header map
on a route with a header mutation (``edit_headers``).

Routing keys (PROTOCOLS.md section 4):

- ``service`` is the SOFA service unique name exactly as sent, ``interface:version[:uniqueId]``
  (``sofa_head_target_service``, else ``service``), so a route can match the whole name
  (``com.example.EchoService:1.0``) or a prefix of it. The parts are also split out:
  ``version`` is the second part, ``group`` the third (the SOFA ``uniqueId``), and the keys
  ``interface`` and ``unique_id`` resolve to the first and third parts.
- ``method`` is ``sofa_head_method_name``; when absent it is read lazily from the hessian2
  ``SofaRequest`` body (``methodName``), only when a route asks for it.
- ``app`` / ``target_app`` resolve to ``sofa_head_target_app``; any other header-map key is a header.
  Header-map entries whose value is null (length -1) are left out of ``headers``; empty values stay.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, ClassVar, Final

from sofamesh.core.buffer import FrameBuffer
from sofamesh.core.codec import Codec, CodecFactory, CodecLimits, CodecState, Failure, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import (
    NEED_DATA,
    ConnectionClosed,
    Heartbeat,
    RequestHead,
    ResponseHead,
)
from sofamesh.core.headers import Headers
from sofamesh.plugins.protocols.bolt.frames import (
    CMD_HEARTBEAT,
    CODEC_HESSIAN2,
    CRC_LEN,
    PROTO_V1,
    PROTO_V2,
    SOFA_RESPONSE_CLASS,
    STATUS_CODEC_EXCEPTION,
    STATUS_CONNECTION_CLOSED,
    STATUS_NO_PROCESSOR,
    STATUS_SERVER_EXCEPTION,
    STATUS_SERVER_THREADPOOL_BUSY,
    STATUS_SUCCESS,
    STATUS_TIMEOUT,
    STATUS_UNKNOWN,
    TYPE_ONEWAY,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    V1_FRAMING,
    V1_REQUEST,
    V1_RESPONSE,
    V2_REQUEST,
    V2_RESPONSE,
    Framing,
    crc32,
    edit_header_map,
    encode_header_map,
    encode_request,
    encode_response,
    parse_header_map,
    with_request_id,
)
from sofamesh.plugins.protocols.bolt.hessian import argument_bytes, read_method_name
from sofamesh.plugins.protocols.bolt.state import RECEIVABLE, Kind

if TYPE_CHECKING:
    from sofamesh.core.codec import HeaderEdit
    from sofamesh.core.events import Event, _NeedData

PROTOCOL: Final = "bolt"

HEADER_TARGET_SERVICE: Final = "sofa_head_target_service"
HEADER_SERVICE: Final = "service"
HEADER_METHOD: Final = "sofa_head_method_name"
HEADER_TARGET_APP: Final = "sofa_head_target_app"

# Proxy-made replies, as MOSN maps them (bolt/protocol.go Mapping). UPSTREAM_RESET: the upstream
# connection closed under the request, which is exactly Bolt's CONNECTION_CLOSED (0x10, HTTP 502
# in the status mapping below); MOSN has no code for it and would answer UNKNOWN (3).
REPLY_STATUS: Final[dict[ReplyStatus, int]] = {
    ReplyStatus.NO_ROUTE: STATUS_NO_PROCESSOR,
    ReplyStatus.NO_HEALTHY_UPSTREAM: STATUS_NO_PROCESSOR,
    ReplyStatus.TIMEOUT: STATUS_TIMEOUT,
    ReplyStatus.REQUEST_TIMEOUT: STATUS_TIMEOUT,
    ReplyStatus.OVERLOAD: STATUS_SERVER_THREADPOOL_BUSY,
    ReplyStatus.RATE_LIMITED: STATUS_SERVER_THREADPOOL_BUSY,
    ReplyStatus.CODEC_ERROR: STATUS_CODEC_EXCEPTION,
    ReplyStatus.PAYLOAD_TOO_LARGE: STATUS_CODEC_EXCEPTION,
    ReplyStatus.HEADERS_TOO_LARGE: STATUS_CODEC_EXCEPTION,
    ReplyStatus.DENIED: STATUS_SERVER_EXCEPTION,
    ReplyStatus.UNAUTHENTICATED: STATUS_SERVER_EXCEPTION,
    ReplyStatus.UPSTREAM_RESET: STATUS_CONNECTION_CLOSED,
    ReplyStatus.INTERNAL: STATUS_UNKNOWN,
    ReplyStatus.UPSTREAM_OVERFLOW: STATUS_SERVER_THREADPOOL_BUSY,
}

_NOT_PROCESSED: Final = Failure.SERVER_ERROR | Failure.GATEWAY_ERROR | Failure.RETRIABLE
# What a Bolt status means for retries and outlier detection (``Codec.classify``): server busy,
# timeout and connection closed are gateway errors worth another provider; so is "no processor"
# (this provider does not serve the interface). Anything else that is not SUCCESS is a 5xx.
FAILURES: Final[dict[int, Failure]] = {
    STATUS_SUCCESS: Failure(0),
    STATUS_SERVER_THREADPOOL_BUSY: _NOT_PROCESSED,
    STATUS_TIMEOUT: _NOT_PROCESSED,
    STATUS_CONNECTION_CLOSED: _NOT_PROCESSED,
    STATUS_NO_PROCESSOR: Failure.SERVER_ERROR | Failure.RETRIABLE,
}

# Bolt status -> HTTP class, for stats and bridging (MOSN bolt/mapping.go); anything else is 500.
HTTP_STATUS: Final[dict[int, int]] = {
    STATUS_SUCCESS: 200,
    STATUS_SERVER_THREADPOOL_BUSY: 503,
    STATUS_TIMEOUT: 504,
    STATUS_CONNECTION_CLOSED: 502,
}

_FRAMINGS: dict[tuple[int, int, int, int, int], Framing] = {}
_MAX_FRAMINGS = 1024


def _framing(proto: int, ver1: int, switch: int, codec: int, ver2: int) -> Framing:
    key = (proto, ver1, switch, codec, ver2)
    f = _FRAMINGS.get(key)
    if f is None:
        f = Framing(proto, ver1, switch, codec, ver2)
        if len(_FRAMINGS) < _MAX_FRAMINGS:
            _FRAMINGS[key] = f
    return f


def split_service(name: str) -> tuple[str, str, str]:
    """``interface:version[:uniqueId]`` -> (interface, version, uniqueId); missing parts are ``""``."""
    parts = name.split(":", 2)
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""


class _HeaderInfo:
    """What a header-map block decodes to, shared by every frame that carries the same block.

    It is also the ``RequestHead.resolve`` of those frames when the block names the method: every
    derived key then comes from the block alone, and no per-frame resolver is built.
    """

    __slots__ = ("group", "headers", "method", "target", "version")

    def __init__(self, block: bytes) -> None:
        items = parse_header_map(block) if block else []
        self.headers = Headers([(k, v) for k, v in items if v is not None]) if items else Headers()
        target = method = ""
        for k, v in items:
            if not v:
                continue
            if k == HEADER_TARGET_SERVICE:
                target = v
            elif k == HEADER_SERVICE and not target:
                target = v
            elif k == HEADER_METHOD:
                method = v
        self.target = target
        self.method = method
        _, self.version, self.group = split_service(target)

    def __call__(self, name: str) -> str | None:
        if name == "method":
            return self.method or None
        return _derived_key(name, self.target, self.headers)


def _derived_key(name: str, service: str, headers: Headers) -> str | None:
    """The routing keys derived from the service name and the header map (module docstring)."""
    if name == "interface":
        return split_service(service)[0] or None
    if name in ("unique_id", "uniqueId"):
        return split_service(service)[2] or None
    if name in ("app", "target_app"):
        return headers.get(HEADER_TARGET_APP)
    return None


# A client sends the same header map (service, method, app...) on request after request, so a
# block's decoding is kept and looked up by its bytes: a slice and a dict lookup instead of a parse,
# a Headers and the split of the service name per frame. Bounded by entries and by block size.
_HEADER_CACHE: dict[bytes, _HeaderInfo] = {}
_HEADER_CACHE_MAX = 512
_HEADER_CACHE_BLOCK_MAX = 2048


def _header_info(block: bytes) -> _HeaderInfo:
    info = _HEADER_CACHE.get(block)
    if info is None:
        info = _HeaderInfo(block)  # raises ValueError on a malformed block
        if len(block) <= _HEADER_CACHE_BLOCK_MAX:
            if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
                _HEADER_CACHE.clear()
            _HEADER_CACHE[block] = info
    return info


class _LazyKeys:
    """``RequestHead.resolve`` for a request whose header map does not name the method: the method
    is read from the hessian2 body, once, and only when a route asks for it."""

    __slots__ = ("_end", "_frame", "_info", "_method", "_start")

    def __init__(self, frame: bytes | None, content_start: int, content_end: int, info: _HeaderInfo) -> None:
        self._frame = frame  # None: not a hessian2 body, or already read
        self._start = content_start
        self._end = content_end
        self._info = info
        self._method: str | None = None

    def __call__(self, name: str) -> str | None:
        if name == "method":
            frame = self._frame
            if frame is not None:
                self._method = read_method_name(memoryview(frame)[self._start:self._end]) or ""
                self._frame = None
            return self._method or None
        return _derived_key(name, self._info.target, self._info.headers)


_EMPTY_HEADERS: Final = Headers()
# Enum members as module constants: ``Kind.RESPONSE`` is a class attribute lookup that costs about
# 0.2 us in CPython 3.11, and each frame made four of them.
_RESPONSE: Final = Kind.RESPONSE
_ONEWAY: Final = Kind.ONEWAY
_HEARTBEAT: Final = Kind.HEARTBEAT
_HEARTBEAT_REPLY: Final = Kind.HEARTBEAT_REPLY
_NO_HEADERS: Final = _HeaderInfo(b"")
_KIND_KEY_SHIFT: Final = 8  # (type, cmdcode) as one int key: type << 8 | cmdcode (cmdcode is 16 bits)


class BoltCodec(Codec):
    """One connection's Bolt engine (v1 and v2 frames may be mixed on one connection)."""

    def __init__(self, role: Role, limits: CodecLimits | None = None) -> None:
        self.role = role
        self.limits = limits or CodecLimits()
        self._buf = FrameBuffer()  # parsed in place; a frame that is a whole read is forwarded uncopied
        self._closed = False
        self._close_reported = False
        self._error: RemoteProtocolError | None = None
        self._framing = V1_FRAMING  # framing of the last frame seen; heartbeats we send use it
        # this side's rows of the state table, keyed by plain ints (hashing the Role enum is slow)
        self._kinds = {t << _KIND_KEY_SHIFT | c: k for (r, t, c), k in RECEIVABLE.items() if r is role}
        self._answerable_role = role is Role.SERVER
        # the last header-map block this connection sent and its decoding: a client repeats its block
        self._last_block = b""
        self._last_info = _NO_HEADERS

    # -- receiving --------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._closed:
            if data:
                raise RemoteProtocolError("bolt: data received after the connection closed")
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
            avail = len(data) - pos
            if avail <= 0:  # every frame of the read was taken: the usual end of a batch
                return self._at_end(clean=True) if self._closed else NEED_DATA
            proto = data[pos]
            if proto == PROTO_V1:
                if avail < 2:
                    return self._at_end(clean=False)
                type_ = data[pos + 1]
                layout = V1_RESPONSE if type_ == TYPE_RESPONSE else V1_REQUEST
            elif proto == PROTO_V2:
                if avail < 3:
                    return self._at_end(clean=False)
                if data[pos + 1] not in (1, 2):
                    raise RemoteProtocolError(f"bolt v2: unknown protocol version ver1={data[pos + 1]}")
                type_ = data[pos + 2]
                layout = V2_RESPONSE if type_ == TYPE_RESPONSE else V2_REQUEST
            else:
                raise RemoteProtocolError(f"bolt: unknown protocol code 0x{proto:02x}")
            if type_ > TYPE_ONEWAY:  # TYPE_RESPONSE, TYPE_REQUEST, TYPE_ONEWAY are 0, 1, 2
                raise RemoteProtocolError(f"bolt: unknown frame type {type_}")
            hlen = layout.size
            if avail < hlen:
                return self._at_end(clean=False)
            if proto == PROTO_V1:
                _, _, cmdcode, ver2, rid, codec, status_or_timeout, class_len, header_len, content_len = \
                    layout.unpack_from(data, pos)
                framing = self._framing  # the connection's previous framing, nearly always this one's
                if not (framing.codec == codec and framing.ver2 == ver2 and framing.proto == 1
                        and framing.ver1 == 1 and framing.switch == 0):
                    framing = _framing(1, 1, 0, codec, ver2)
                crc_len = 0  # v1 has no CRC
            else:
                (_, ver1, _, cmdcode, ver2, rid, codec, switch, status_or_timeout,
                 class_len, header_len, content_len) = layout.unpack_from(data, pos)
                framing = _framing(proto, ver1, switch, codec, ver2)
                crc_len = CRC_LEN if framing.has_crc else 0
            kind = self._kinds.get(type_ << _KIND_KEY_SHIFT | cmdcode)
            limits = self.limits
            if kind is None or header_len > limits.max_header_bytes:
                answerable = self._answerable(type_, cmdcode)
                if kind is None:
                    raise self._error_for(
                        f"bolt: a {self.role.value}-side codec does not accept type {type_} cmdcode {cmdcode}",
                        400, rid, framing, answerable)
                raise self._error_for(
                    f"bolt: header map of {header_len} bytes exceeds max_header_bytes "
                    f"{limits.max_header_bytes}", 431, rid, framing, answerable)
            total = hlen + class_len + header_len + content_len + crc_len
            if total > limits.max_frame_bytes:
                raise self._error_for(
                    f"bolt: frame of {total} bytes exceeds max_frame_bytes {limits.max_frame_bytes}",
                    413, rid, framing, self._answerable(type_, cmdcode))
            if avail < total:
                return self._at_end(clean=False)
            frame = buf.take(pos + total)
            if crc_len:
                body_end = total - CRC_LEN
                if crc32(memoryview(frame)[:body_end]) != int.from_bytes(frame[body_end:], "big"):
                    raise self._error_for("bolt v2: CRC32 mismatch", 400, rid, framing,
                                          self._answerable(type_, cmdcode))
            self._framing = framing
            if kind is _HEARTBEAT or kind is _HEARTBEAT_REPLY:
                return Heartbeat(request_id=rid, reply=kind is _HEARTBEAT_REPLY, raw=frame, meta=framing)
            hstart = hlen + class_len
            hend = hstart + header_len
            if header_len:
                last = self._last_block
                if header_len == len(last) and frame.startswith(last, hstart):
                    info = self._last_info  # the connection's previous block again: compared, not sliced and hashed
                else:
                    block = frame[hstart:hend]
                    try:
                        info = _header_info(block)
                    except ValueError as bad:
                        raise self._error_for(f"bolt: bad header map: {bad}", 400, rid, framing,
                                              self._answerable(type_, cmdcode)) from None
                    self._last_block = block
                    self._last_info = info
                headers = info.headers
            else:
                info = _NO_HEADERS
                headers = _EMPTY_HEADERS
            # Positional arguments: keywords cost about as much again as building the event itself.
            if kind is _RESPONSE:
                # protocol, request_id, status, http_status, headers, reason, end_stream, raw, meta
                return ResponseHead(PROTOCOL, rid, status_or_timeout, HTTP_STATUS.get(status_or_timeout, 500), headers,
                                    "", True, frame, framing)
            method = info.method
            resolve: _HeaderInfo | _LazyKeys = info
            if not method:
                resolve = _LazyKeys(frame if codec == CODEC_HESSIAN2 else None, hend, hend + content_len, info)
            # protocol, request_id, service, method, path, version, group, headers, oneway, end_stream, raw,
            # timeout_ms, resolve, meta
            return RequestHead(PROTOCOL, rid, info.target, method, "", info.version, info.group, headers,
                               kind is _ONEWAY, True, frame, status_or_timeout if status_or_timeout > 0 else None,
                               resolve, framing)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _answerable(self, type_: int, cmdcode: int) -> bool:
        """Only a two-way request from a downstream client gets a local reply to a bad frame."""
        return self._answerable_role and type_ == TYPE_REQUEST and cmdcode != CMD_HEARTBEAT

    def _at_end(self, clean: bool) -> ConnectionClosed | _NeedData:
        if self._closed and not self._close_reported:
            self._close_reported = True
            return ConnectionClosed(clean=clean)
        return NEED_DATA

    def _error_for(self, message: str, hint: int, rid: int, framing: Framing,
                   answerable: bool) -> RemoteProtocolError:
        head = RequestHead(protocol=PROTOCOL, request_id=rid, meta=framing) if answerable else None
        return RemoteProtocolError(message, status_hint=hint, head=head)

    def partial(self) -> bool:
        """A frame started and not complete yet."""
        return len(self._buf) > 0

    def buffered(self) -> int:
        return len(self._buf)

    # -- hot upgrade ------------------------------------------------------------------------------
    def export_state(self) -> CodecState | None:
        """Frames are self-describing: the state is the last frame's framing (what heartbeats use),
        and the unread bytes are the start of the next frame."""
        if self._closed or self._error is not None:
            return None
        f = self._framing
        return CodecState(bytes((f.proto, f.ver1, f.switch, f.codec, f.ver2)), bytes(self._buf.data[self._buf.pos:]))

    def import_state(self, state: bytes) -> None:
        if len(state) != 5:
            raise ValueError(f"bolt: connection state is 5 bytes (the framing), got {len(state)}")
        self._framing = _framing(*state)

    # -- sending ----------------------------------------------------------------------------------
    def send(self, event: Event) -> bytes:
        if isinstance(event, (RequestHead, ResponseHead, Heartbeat)) and event.raw is not None:
            return event.raw
        if isinstance(event, ResponseHead):
            framing = event.meta if isinstance(event.meta, Framing) else V1_FRAMING
            header = encode_header_map(list(event.headers)) if len(event.headers) else b""
            return encode_response(event.request_id, event.status, framing, header=header)
        if isinstance(event, Heartbeat):
            return self.heartbeat_reply(event) if event.reply else self.heartbeat(event.request_id)
        raise LocalProtocolError(f"bolt: cannot encode {type(event).__name__} without its raw frame")

    def rewrite_request_id(self, frame: bytes, new_id: int) -> bytes:
        try:
            return with_request_id(frame, new_id)
        except (ValueError, struct.error) as exc:
            raise LocalProtocolError(f"bolt: cannot rewrite request id: {exc}") from None

    def heartbeat(self, request_id: int) -> bytes:
        f = self._framing
        framing = _framing(f.proto, f.ver1, f.switch, CODEC_HESSIAN2, f.ver2)
        return encode_request(request_id, framing, type_=TYPE_REQUEST, cmdcode=CMD_HEARTBEAT, timeout_ms=-1)

    def heartbeat_reply(self, beat: Heartbeat) -> bytes:
        framing = beat.meta if isinstance(beat.meta, Framing) else V1_FRAMING
        return encode_response(beat.request_id, STATUS_SUCCESS, framing, cmdcode=CMD_HEARTBEAT)

    def local_reply(self, head: RequestHead, status: ReplyStatus, message: str) -> bytes:
        framing = head.meta if isinstance(head.meta, Framing) else V1_FRAMING
        return encode_response(
            head.request_id, REPLY_STATUS.get(status, STATUS_UNKNOWN), framing,
            class_name=SOFA_RESPONSE_CLASS,
        )

    def request_argument(self, head: RequestHead, index: int) -> bytes | None:
        """Argument ``index``'s Hessian 2.0 bytes in a hessian2 request body (SOFARPC's consistent
        hash balancer hashes argument 0); what precedes it is skipped, nothing is decoded."""
        frame, framing = head.raw, head.meta
        if frame is None or not isinstance(framing, Framing) or framing.codec != CODEC_HESSIAN2:
            return None
        layout = V1_REQUEST if framing.proto == PROTO_V1 else V2_REQUEST
        class_len, header_len, content_len = layout.unpack_from(frame, 0)[-3:]
        start = layout.size + class_len + header_len
        return argument_bytes(memoryview(frame)[start:start + content_len], index)

    def edit_headers(self, frame: bytes, edit: HeaderEdit, request: RequestHead | None = None) -> bytes:
        """The header map (SOFA RPC's request / response props) re-encoded with ``edit`` applied;
        class name and content are copied, headerLen and the v2 CRC32 fixed."""
        try:
            return edit_header_map(frame, edit)
        except struct.error as exc:
            raise ValueError(f"bolt: {exc}") from None

    def map_status(self, status: int) -> int:
        return HTTP_STATUS.get(status, 500)

    def classify(self, head: ResponseHead) -> Failure:
        return FAILURES.get(head.status, Failure.SERVER_ERROR)


class BoltCodecFactory(CodecFactory):
    """The ``bolt`` protocol: Bolt v1 (0x01) and v2 (0x02) on one port."""

    name: ClassVar[str] = PROTOCOL
    multiplexed: ClassVar[bool] = True
    sniff_bytes: ClassVar[int] = 1
    request_id_bits: ClassVar[int] = 32
    header_mutation: ClassVar[bool] = True  # ``BoltCodec.edit_headers``

    def sniff(self, prefix: bytes) -> Sniff:
        if not prefix:
            return Sniff.NEED_MORE
        return Sniff.MATCH if prefix[0] in (PROTO_V1, PROTO_V2) else Sniff.NO

    def new_codec(self, role: Role, limits: CodecLimits) -> BoltCodec:
        return BoltCodec(role, limits)


__all__ = ["FAILURES", "HTTP_STATUS", "REPLY_STATUS", "BoltCodec", "BoltCodecFactory", "split_service"]
