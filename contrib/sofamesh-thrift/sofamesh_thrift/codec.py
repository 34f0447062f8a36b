"""Thrift framed/binary codec for sofamesh. Pure: bytes in, events out. No sockets, no event loop, no logging.

Server role parses CALL/ONEWAY frames into ``RequestHead(raw=<whole frame>)``; client role parses
REPLY/EXCEPTION frames into ``ResponseHead``. The proxy forwards frames untouched except for the
seqid, which it rewrites on multiplexed upstream connections (``rewrite_request_id``). Errors the
proxy answers itself go back as ``TApplicationException`` in the framing the client used.
"""

from __future__ import annotations

from typing import ClassVar

from sofamesh.core.buffer import ReceiveBuffer
from sofamesh.core.codec import Codec, CodecFactory, CodecLimits, ReplyStatus, Role, Sniff
from sofamesh.core.errors import LocalProtocolError, RemoteProtocolError
from sofamesh.core.events import NEED_DATA, ConnectionClosed, Event, NeedData, RequestHead, ResponseHead
from sofamesh_thrift.frames import (
    CALL,
    EXCEPTION,
    INTERNAL_ERROR,
    MESSAGE_TYPES,
    ONEWAY,
    PROTOCOL_ERROR,
    REPLY,
    UNKNOWN,
    UNKNOWN_METHOD,
    VERSION_1,
    MessageHeader,
    application_exception,
    encode_message,
    frame_length,
    parse_header,
    read_application_exception,
    result_field_id,
    with_seqid,
)

PROTOCOL = "thrift"

# ResponseHead.status values this codec reports (Envoy's thrift_proxy counts the same three outcomes)
SUCCESS = 0
DECLARED_EXCEPTION = 1  # a REPLY whose result struct carries an exception declared in the IDL
APPLICATION_EXCEPTION = 2  # an EXCEPTION message (TApplicationException)
_HTTP = {SUCCESS: 200, DECLARED_EXCEPTION: 500, APPLICATION_EXCEPTION: 500}

# Why the proxy answered -> TApplicationException.type
_EXC_TYPE = {
    ReplyStatus.NO_ROUTE: UNKNOWN_METHOD,
    ReplyStatus.CODEC_ERROR: PROTOCOL_ERROR,
    ReplyStatus.PAYLOAD_TOO_LARGE: PROTOCOL_ERROR,
    ReplyStatus.HEADERS_TOO_LARGE: PROTOCOL_ERROR,
    ReplyStatus.DENIED: UNKNOWN,
    ReplyStatus.UNAUTHENTICATED: UNKNOWN,
    ReplyStatus.RATE_LIMITED: UNKNOWN,
}
_MIN_MESSAGE = 9  # non-strict header with an empty name, no body
_STRICT_PREFIX = VERSION_1 >> 16  # 0x8001


class ThriftCodec(Codec):
    """One connection's Thrift engine (framed transport, binary protocol, strict or not)."""

    def __init__(self, role: Role, limits: CodecLimits) -> None:
        self.role = role
        self.keep_alive = True
        self._max_frame = limits.max_frame_bytes
        self._max_name = limits.max_header_bytes
        self._buf = ReceiveBuffer()
        self._closed = False
        self._close_reported = False
        self._error: RemoteProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        if data:
            self._buf.append(data)
        else:
            self._closed = True

    def partial(self) -> bool:
        """A frame started and not complete yet (the listener's request_headers_timeout_ms)."""
        return len(self._buf) > 0

    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Event | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _next(self) -> Event | NeedData:
        buf = self._buf
        have = len(buf)
        if have >= 4:
            size = frame_length(buf.peek(4))
            if size < _MIN_MESSAGE:
                raise RemoteProtocolError(f"thrift: bad frame length {size}", 400, self._partial(buf.peek(64)))
            if size > self._max_frame:
                header_room = 4 + min(size, self._max_name + 16)  # enough for any message header
                head = self._partial(buf.peek(header_room))
                if head is None and have < header_room and not self._closed:
                    return NEED_DATA  # wait (bounded) for the seqid, to answer before closing
                raise RemoteProtocolError(f"thrift: frame of {size} bytes is over the {self._max_frame} byte limit",
                                          413, head)
            if have >= 4 + size:
                return self._event(buf.take(4 + size))
        if self._closed:
            if self._close_reported:
                return NEED_DATA
            self._close_reported = True
            return ConnectionClosed(clean=have == 0)
        return NEED_DATA

    def _event(self, frame: bytes) -> Event:
        try:
            hdr = parse_header(frame, self._max_name)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), 400, self._partial(frame)) from None
        if self.role is Role.SERVER:
            if hdr.type not in (CALL, ONEWAY):
                raise RemoteProtocolError(f"thrift: a client sent a {MESSAGE_TYPES[hdr.type]} message",
                                          400, self._head(hdr, frame))
            return self._head(hdr, frame)
        if hdr.type == REPLY:
            status = SUCCESS if result_field_id(frame, hdr.body_offset) == 0 else DECLARED_EXCEPTION
            reason = ""
        elif hdr.type == EXCEPTION:
            status = APPLICATION_EXCEPTION
            reason = read_application_exception(frame, hdr.body_offset)[0]
        else:
            raise RemoteProtocolError(f"thrift: a server sent a {MESSAGE_TYPES[hdr.type]} message")
        return ResponseHead(PROTOCOL, hdr.seqid, status, _HTTP[status], reason=reason, raw=frame, meta=hdr)

    @staticmethod
    def _head(hdr: MessageHeader, frame: bytes | None) -> RequestHead:
        return RequestHead(PROTOCOL, hdr.seqid, hdr.service, hdr.method, oneway=hdr.type == ONEWAY, raw=frame,
                           meta=hdr)

    def _partial(self, data: bytes) -> RequestHead | None:
        """What can be read of a broken request (to answer it before closing), server role only."""
        if self.role is not Role.SERVER:
            return None
        try:
            hdr = parse_header(data, self._max_name)
        except RemoteProtocolError:
            return None
        return self._head(hdr, None) if hdr.type == CALL else None

    def send(self, event: Event) -> bytes:
        raw = getattr(event, "raw", None)
        if isinstance(event, RequestHead | ResponseHead) and raw is not None:
            return raw
        raise LocalProtocolError(f"thrift: cannot encode {type(event).__name__} without its raw frame")

    def rewrite_request_id(self, frame: bytes, new_id: int) -> bytes:
        return with_seqid(frame, new_id)

    def local_reply(self, head: RequestHead, status: ReplyStatus, message: str) -> bytes:
        hdr = head.meta if isinstance(head.meta, MessageHeader) else None
        strict = hdr.strict if hdr is not None else True
        text = f"sofamesh {status.http_status} {status.name.lower()}: {message}"
        body = application_exception(text, _EXC_TYPE.get(status, INTERNAL_ERROR))
        return encode_message(head.method, EXCEPTION, head.request_id, body, strict)

    def map_status(self, status: int) -> int:
        return _HTTP.get(status, 500)


class ThriftCodecFactory(CodecFactory):
    """``thrift`` in the protocol catalog: framed transport, binary protocol, seqid-multiplexed."""

    name: ClassVar[str] = PROTOCOL
    multiplexed: ClassVar[bool] = True
    sniff_bytes: ClassVar[int] = 8
    request_id_bits: ClassVar[int] = 32

    def sniff(self, prefix: bytes) -> Sniff:
        if not prefix:
            return Sniff.NEED_MORE
        if prefix[0] != 0:  # frames over 16 MiB are not sniffed (nor allowed by default)
            return Sniff.NO
        if len(prefix) >= 6 and prefix[4] & 0x80 and (prefix[4] << 8 | prefix[5]) != _STRICT_PREFIX:
            return Sniff.NO
        if len(prefix) < 8:
            return Sniff.NEED_MORE
        size = frame_length(prefix)
        if size < _MIN_MESSAGE:
            return Sniff.NO
        if prefix[4] & 0x80:
            return Sniff.MATCH if prefix[6] == 0 and prefix[7] in MESSAGE_TYPES else Sniff.NO
        name_len = frame_length(prefix[4:8])
        return Sniff.MATCH if 0 < name_len <= size - _MIN_MESSAGE else Sniff.NO

    def new_codec(self, role: Role, limits: CodecLimits) -> ThriftCodec:
        return ThriftCodec(role, limits)


__all__ = [
    "APPLICATION_EXCEPTION",
    "DECLARED_EXCEPTION",
    "PROTOCOL",
    "SUCCESS",
    "ThriftCodec",
    "ThriftCodecFactory",
]
