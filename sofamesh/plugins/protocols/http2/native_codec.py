"""The HTTP/2 codec on the project's own connection machine (``machine``) instead of ``h2``.

Pure: bytes in, events out. No sockets, no event loop, no logging. ``NativeHttp2Codec`` keeps every
behaviour of ``Http2Codec`` the kernel relies on (events, routing keys, end-to-end flow control,
local replies; see ``codec``'s docstring) and changes only the engine underneath: frames, HPACK,
stream states, windows, SETTINGS, PING and GOAWAY come from ``machine``. What the engine adds:

* a request whose header list is over ``CodecLimits.max_header_bytes`` is answered 431 on its own
  stream (RFC 9113 10.5.1); the connection serves on;
* the streams the peer refused in its GOAWAY (above its last stream id, never processed) come to
  the kernel as ``StreamReset(REFUSED_STREAM)``, which it may send again on another connection;
* a stream error the peer made (RST_STREAM sent by the machine) ends the stream for the kernel too.

The ``http2`` entry point registers it by default; ``SOFAMESH_HTTP2_CODEC=h2`` in the proxy's
environment selects the codec on ``h2`` instead (see ``plugin``).
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from sofamesh.core.codec import CodecLimits, ReplyStatus, Role
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
    _NeedData,
)
from sofamesh.plugins.protocols.http2 import frames, machine
from sofamesh.plugins.protocols.http2.codec import Http2Codec, Http2CodecFactory, Http2Event
from sofamesh.plugins.protocols.http2.events import StreamReset, WindowOpened
from sofamesh.plugins.protocols.http2.fields import MalformedFields

_MARK = b"x-sofamesh-local-reply"


class _Connection:
    """A ``machine.Machine`` under the ``h2`` method names ``Http2Codec``'s shared code calls. Not a
    subclass: the compiled build compiles ``machine``, and an interpreted class cannot extend a
    compiled one; the machine's own bound methods are used wherever the names take the same arguments."""

    __slots__ = (
        "data_to_send", "end_stream", "local_flow_control_window", "machine", "ping", "reset_stream", "send_data",
        "send_headers",
    )  # fmt: skip

    max_outbound_frame_size: ClassVar[int] = 1 << 62  # the machine splits DATA into frames itself

    def __init__(self, m: machine.Machine) -> None:
        self.machine = m
        self.send_headers = m.send_headers
        self.send_data = m.send_data
        self.end_stream = m.end_stream
        self.reset_stream = m.reset_stream
        self.ping = m.ping
        self.data_to_send = m.data_to_send
        self.local_flow_control_window = m.sendable

    def acknowledge_received_data(self, nbytes: int, stream_id: int) -> None:
        self.machine.acknowledge(stream_id, nbytes)

    def get_next_available_stream_id(self) -> int:
        return self.machine.next_stream_id

    def close_connection(
        self, error_code: int = 0, additional_data: bytes | None = None, last_stream_id: int | None = None
    ) -> None:
        last = -1 if last_stream_id is None else last_stream_id
        self.machine.goaway(int(error_code), last, additional_data or b"")


class NativeHttp2Codec(Http2Codec):
    """``Http2Codec`` on ``machine``: one HTTP/2 connection in one role."""

    graceful_goaway: ClassVar[bool] = True  # the machine serves streams up to the GOAWAY's last id

    def __init__(
        self,
        role: Role,
        limits: CodecLimits | None = None,
        *,
        initial_window_size: int = 256 * 1024,
        connection_window_size: int = 16 * 1024 * 1024,
        max_concurrent_streams: int = 1024,
        max_frame_size: int = 16_384,
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
        )
        self._conn = _Connection(self._machine)  # type: ignore[assignment]  # the h2 names the shared code calls
        self._streams = {}
        self._events = deque()
        self._inbox = []
        self._eof = False
        self._eof_reported = False
        self._error = None

    def next_event(self) -> Http2Event | _NeedData:
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
            except MalformedFields as exc:
                self._machine.goaway(frames.PROTOCOL_ERROR, -1, b"malformed header block")
                self._error = RemoteProtocolError(f"http2: {exc}", status_hint=400)
        if self._eof and not self._eof_reported:
            self._eof_reported = True
            return ConnectionClosed(clean=not self._streams)
        return NEED_DATA

    def _on_event(self, ev: machine.Event) -> None:
        t = type(ev)
        if t is machine.DataReceived:
            assert isinstance(ev, machine.DataReceived)
            if ev.data:
                self._data(ev.stream_id, ev.data, len(ev.data))
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

    def send(self, event: Event) -> bytes:
        try:
            return super().send(event)
        except machine.StreamClosedError as exc:
            if isinstance(event, (EndOfMessage, BodyChunk)):
                sid = event.stream_id
            else:
                sid = getattr(event, "request_id", 0)
            if sid in self._streams:
                raise LocalProtocolError(f"http2: cannot send {type(event).__name__}: {exc}") from exc
            return self._machine.data_to_send()  # the peer reset it; its StreamReset is on the way
        except machine.UsageError as misuse:
            raise LocalProtocolError(f"http2: cannot send {type(event).__name__}: {misuse}") from misuse

    def _reply(self, head: RequestHead, status: ReplyStatus, message: str) -> None:
        try:
            super()._reply(head, status, message)
        except machine.UsageError:
            self._drop(head.request_id)  # the stream died under us (reset by the peer): nothing to answer

    @property
    def max_outbound_streams(self) -> int:
        return self._machine.remote_max_concurrent_streams


class NativeHttp2CodecFactory(Http2CodecFactory):
    """``http2`` with ``NativeHttp2Codec``."""

    def new_codec(self, role: Role, limits: CodecLimits) -> NativeHttp2Codec:
        return NativeHttp2Codec(role, limits)


__all__ = ["NativeHttp2Codec", "NativeHttp2CodecFactory"]
