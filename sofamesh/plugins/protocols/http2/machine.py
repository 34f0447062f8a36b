"""The HTTP/2 connection (RFC 9113) as a sans-IO state machine: bytes in, events and bytes out.

Pure, no I/O, typed for mypyc. One ``Machine`` per connection, in the client or the server role.
``receive_data(chunk)`` walks the frames in place (a frame is sliced out only for what an event
carries: a DATA payload, a header block), decodes header blocks with ``hpack_codec``, keeps the
stream states (RFC 9113 5.1), both directions' flow-control windows (5.2, 6.9), SETTINGS (6.5),
PING (6.7) and GOAWAY (6.8), and returns the events in order. The bytes it must write on its own
(SETTINGS and its ACK, PING ACKs, WINDOW_UPDATEs, RST_STREAMs, GOAWAY) wait in ``data_to_send()``.
PRIORITY frames and the priority fields of HEADERS are checked for form and otherwise ignored, as
RFC 9113 5.3.2 allows. Server push is never enabled.

Errors get the RFC's codes: a connection error queues GOAWAY(code, last peer stream, reason) and
ends the machine with ``ConnectionFailed``; a stream error queues RST_STREAM(code) and is reported
as ``StreamReset(remote=False)``. Limits, each a constructor argument:

* ``max_concurrent_streams`` (our SETTINGS): a stream past it is refused with RST_STREAM(REFUSED_STREAM).
* ``max_header_list_size`` (our SETTINGS): a longer header list is still decoded whole (the HPACK
  tables must stay in step, RFC 9113 10.5.1) and reported with ``too_large`` for the caller to
  answer 431; a compressed block over twice that size is GOAWAY(ENHANCE_YOUR_CALM).
* ``max_continuations``: more CONTINUATION frames in one header block is a CONTINUATION flood
  (CVE-2024-27316), GOAWAY(ENHANCE_YOUR_CALM); nghttp2's default of 8.
* ``premature_reset_min_streams``: once the peer has opened that many streams, resetting half or
  more of them before our answer ended is the rapid-reset attack (CVE-2023-44487),
  GOAWAY(ENHANCE_YOUR_CALM); Envoy's premature-reset rule with its default of 500.
* ``max_outbound_frames`` and ``max_outbound_control_frames`` (Envoy's, 10000 and 1000): frames queued
  and not yet written to the socket; the control frames are those the peer makes us send (SETTINGS
  and PING ACKs, RST_STREAM). A frame is written once ``data_to_send()`` took it, unless the caller
  said the socket is not draining (``write_blocked(True)``, asyncio's pause_writing): then they
  count until ``write_blocked(False)``. The peer's next frame past either limit is a flood (it
  makes us write and does not read), GOAWAY(ENHANCE_YOUR_CALM); a control frame past the limit
  at once.
* ``max_inbound_priority_frames_per_stream`` (Envoy's 100): PRIORITY frames over that many times
  (1 + the header blocks received) are a flood, GOAWAY(ENHANCE_YOUR_CALM).
* ``max_inbound_window_update_frames_per_data_frame_sent`` (Envoy's 10): WINDOW_UPDATE frames over
  1 + 2 x (header blocks received + that many times the DATA frames sent) are a flood; 0 turns
  the check off (for a codec that only watches a connection and never sends its DATA).
* ``stream_reset_burst`` and ``stream_reset_rate`` (nghttp2's 1000 and 33 per second): RST_STREAM
  frames the peer sends on streams it opened, as a token bucket; past it, the rapid-reset attack
  (CVE-2023-44487) whatever the streams' answers did, GOAWAY(ENHANCE_YOUR_CALM). The clock is a
  constructor argument (``time.monotonic``), read only when such a RST_STREAM arrives.
* ``settings_overdue()``: asked by the caller once ``settings_timeout`` seconds (nghttpx's 10) passed
  since the connection began; if our SETTINGS is still not acknowledged, GOAWAY(SETTINGS_TIMEOUT),
  RFC 9113 6.5.3.
* ``custom_settings``: more (identifier, value) entries of our SETTINGS, after ours; one with the
  identifier of ours (HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE,
  MAX_FRAME_SIZE) replaces it and is enforced as it would be.
* ``max_settings_entries`` per SETTINGS frame (nghttp2's 32) and ``max_empty_frames``, consecutive
  DATA frames with no payload and no END_STREAM (Envoy's default of 1): ENHANCE_YOUR_CALM.

After the peer's GOAWAY the machine keeps serving the streams at or below its last stream id and
keeps answering PING; the streams we opened above it are closed and listed in
``GoAwayReceived.refused`` (the peer never processed them: safe to send again elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from sofamesh.plugins.protocols.http2.frames import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MAX_HEADER_LIST_SIZE,
    MAX_WINDOW,
    MIN_FRAME_SIZE,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ACK,
    SETTINGS_TIMEOUT,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    error_name,
    frame_header,
    goaway_frame,
    ping_frame,
    rst_stream_frame,
    settings_frame,
    window_update_frame,
)
from sofamesh.plugins.protocols.http2.hpack_codec import DEFAULT_TABLE_SIZE, Decoder, Encoder, HpackError

# HeadersReceived.kind
REQUEST: Final = 0
RESPONSE: Final = 1
INFORMATIONAL: Final = 2  # a 1xx response; the final one follows
TRAILERS: Final = 3

# Stream states (RFC 9113 5.1); idle streams are not stored, closed ones only while bytes are unacknowledged.
_OPEN: Final = 0
_HALF_CLOSED_LOCAL: Final = 1
_HALF_CLOSED_REMOTE: Final = 2
_CLOSED: Final = 3

_Fields = list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]  # a header block to send

_RESET_MEMORY: Final = 1024  # closed streams remembered: late frames on those we reset are ignored


class Event:
    """Base of what ``Machine.receive_data`` returns."""

    __slots__ = ()


class HeadersReceived(Event):
    """A complete header block on ``stream_id`` (HEADERS and its CONTINUATIONs)."""

    __slots__ = ("end_stream", "fields", "kind", "list_size", "stream_id", "too_large")

    def __init__(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool, kind: int, list_size: int,
        too_large: bool,
    ) -> None:  # fmt: skip
        self.stream_id = stream_id
        self.fields = fields
        self.end_stream = end_stream
        self.kind = kind  # REQUEST, RESPONSE, INFORMATIONAL or TRAILERS
        self.list_size = list_size  # RFC 9113 6.5.2's size of the whole list
        self.too_large = too_large  # list_size over max_header_list_size: fields are cut short


class DataReceived(Event):
    __slots__ = ("data", "end_stream", "stream_id")

    def __init__(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.data = data  # padding removed; its flow-control share is already given back
        self.end_stream = end_stream


class StreamReset(Event):
    """The stream ended abnormally: RST_STREAM from the peer (``remote``), or one we sent for a
    stream error the peer made (``message`` says which)."""

    __slots__ = ("error_code", "message", "remote", "stream_id")

    def __init__(self, stream_id: int, error_code: int, remote: bool, message: str = "") -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote
        self.message = message


class WindowUpdated(Event):
    """More may be sent on ``stream_id`` (0: on the connection)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class SettingsChanged(Event):
    __slots__ = ("max_concurrent_streams", "window_grew")

    def __init__(self, window_grew: bool, max_concurrent_streams: int) -> None:
        self.window_grew = window_grew  # INITIAL_WINDOW_SIZE went up: every stream may send more
        self.max_concurrent_streams = max_concurrent_streams


class PingAcknowledged(Event):
    __slots__ = ("opaque",)

    def __init__(self, opaque: bytes) -> None:
        self.opaque = opaque


class GoAwayReceived(Event):
    __slots__ = ("debug", "error_code", "last_stream_id", "refused")

    def __init__(self, last_stream_id: int, error_code: int, debug: bytes, refused: list[int]) -> None:
        self.last_stream_id = last_stream_id
        self.error_code = error_code
        self.debug = debug
        self.refused = refused  # our streams above last_stream_id, now closed: never processed


class ConnectionFailed(Event):
    """The peer broke the protocol: GOAWAY(``error_code``) is queued; nothing more is read."""

    __slots__ = ("error_code", "message")

    def __init__(self, error_code: int, message: str) -> None:
        self.error_code = error_code
        self.message = message


class UsageError(ValueError):
    """The caller asked for something the protocol does not allow now (the message says what)."""


class StreamClosedError(UsageError):
    """The stream is closed (reset by the peer, or ended both ways)."""


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _StreamError(Exception):
    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code
        self.message = message


class _Stream:
    __slots__ = (
        "content_left", "final_headers", "head_request", "local", "pending", "premature", "recv_window",
        "send_window", "state", "unacked",
    )  # fmt: skip

    def __init__(self, local: bool, send_window: int, recv_window: int) -> None:
        self.local = local  # opened by us
        self.state = _OPEN
        self.send_window = send_window
        self.recv_window = recv_window  # what the peer may still send
        self.pending = 0  # acknowledged bytes not yet given back in a WINDOW_UPDATE
        self.unacked = 0  # DATA bytes received and not yet acknowledged
        self.final_headers = False  # a final (non-1xx) header block was received
        self.content_left = -1  # content-length still expected, -1 when not declared
        self.premature = True  # a peer stream whose answer has not ended yet
        self.head_request = False  # a stream we opened with a HEAD request: its response has no body


def _content_length(sid: int, fields: list[tuple[bytes, bytes]]) -> int:
    """The content-length a header block declares, -1 without one (RFC 9113 8.1.1)."""
    for name, value in fields:
        if name == b"content-length":
            if not value.isdigit():
                raise _StreamError(sid, PROTOCOL_ERROR, f"content-length {value!r}")
            return int(value)
    return -1


def _u32(data: bytes, i: int) -> int:
    return (data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3]


class _Recent:
    """A bounded memory of stream ids: the last ``_RESET_MEMORY`` added (the oldest is forgotten;
    adding one already there keeps its place). A ring of ids beside a set: forgetting the oldest
    of an insertion-ordered dict costs a scan over the slots of those deleted before it."""

    __slots__ = ("at", "ids", "ring")

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.ring = [0] * _RESET_MEMORY  # stream ids are > 0: 0 is an empty place
        self.at = 0

    def add(self, sid: int) -> None:
        ids = self.ids
        if sid in ids:
            return
        at = self.at
        old = self.ring[at]
        if old:
            ids.discard(old)
        self.ring[at] = sid
        self.at = at + 1 if at + 1 < _RESET_MEMORY else 0
        ids.add(sid)

    def has(self, sid: int) -> bool:
        return sid in self.ids


class Machine:
    """One HTTP/2 connection in one role. See the module docstring."""

    def __init__(
        self,
        client: bool,
        *,
        initial_window_size: int = 256 * 1024,
        connection_window_size: int = 16 * 1024 * 1024,
        max_concurrent_streams: int = 1024,
        max_frame_size: int = MIN_FRAME_SIZE,
        max_header_list_size: int = 64 * 1024,
        max_continuations: int = 8,
        premature_reset_min_streams: int = 500,
        max_outbound_frames: int = 10_000,
        max_outbound_control_frames: int = 1000,
        max_inbound_priority_frames_per_stream: int = 100,
        max_inbound_window_update_frames_per_data_frame_sent: int = 10,
        stream_reset_burst: int = 1000,
        stream_reset_rate: float = 33.0,
        clock: Callable[[], float] = time.monotonic,
        max_settings_entries: int = 32,
        max_empty_frames: int = 1,
        header_table_size: int = DEFAULT_TABLE_SIZE,
        custom_settings: tuple[tuple[int, int], ...] = (),
    ) -> None:
        for ident, value in custom_settings:  # sent as given, and what we send we enforce
            if ident == MAX_FRAME_SIZE:
                max_frame_size = value
            elif ident == HEADER_TABLE_SIZE:
                header_table_size = value
            elif ident == MAX_CONCURRENT_STREAMS:
                max_concurrent_streams = value
            elif ident == INITIAL_WINDOW_SIZE:
                initial_window_size = value
        if not 0 < initial_window_size <= MAX_WINDOW:
            raise ValueError(f"initial_window_size must be 1..2^31-1, got {initial_window_size}")
        if not DEFAULT_WINDOW <= connection_window_size <= MAX_WINDOW:
            raise ValueError(f"connection_window_size must be 65535..2^31-1, got {connection_window_size}")
        if not MIN_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(f"max_frame_size must be 16384..2^24-1, got {max_frame_size}")
        if not 0 <= header_table_size <= 2**32 - 1:
            raise ValueError(f"header_table_size must be 0..2^32-1, got {header_table_size}")
        self.client = client
        self._streams: dict[int, _Stream] = {}
        self._out = bytearray()
        self._inbuf = b""
        self._encoder = Encoder()
        # Until the peer acknowledges our SETTINGS its encoder may use the RFC's 4096 bytes (RFC 9113
        # 6.5.3); a larger table of ours is allowed at once, a smaller one once acknowledged.
        self._header_table_size = header_table_size
        self._decoder = Decoder(max_header_list_size=max_header_list_size)
        if header_table_size > DEFAULT_TABLE_SIZE:
            self._decoder.max_allowed_size = header_table_size  # the table starts at 4096 all the same
        # Ours, in force from the start (the peer may rely on them once it read our SETTINGS).
        self._local_initial = initial_window_size
        self._max_frame_size = max_frame_size
        self._max_concurrent = max_concurrent_streams
        self._max_header_list = max_header_list_size
        self._max_continuations = max_continuations
        self._premature_min = premature_reset_min_streams
        self._max_out_frames = max_outbound_frames
        self._max_out_control = max_outbound_control_frames
        self._max_priority_per_stream = max_inbound_priority_frames_per_stream
        self._max_window_updates_per_data = max_inbound_window_update_frames_per_data_frame_sent
        self._reset_burst = float(stream_reset_burst)
        self._reset_rate = stream_reset_rate
        self._clock = clock
        self._max_settings_entries = max_settings_entries
        self._max_empty = max_empty_frames
        # The peer's, RFC defaults until its SETTINGS arrive.
        self._remote_initial = DEFAULT_WINDOW
        self._remote_max_frame = MIN_FRAME_SIZE
        self._remote_max_streams = 2**31 - 1
        self.remote_max_header_list_size = 2**31 - 1  # advisory (RFC 9113 6.5.2)
        # Connection windows.
        self._send_window = DEFAULT_WINDOW
        self._recv_window = connection_window_size  # what the peer may still send on the connection
        self._recv_target = connection_window_size
        self._recv_pending = 0
        # Stream ids and counts.
        self._next_local = 1 if client else 2
        self._last_peer = 0  # highest stream id the peer opened
        self._local_active = 0
        self._peer_active = 0
        self._peer_opened = 0
        self._premature_resets = 0
        self._reset_by_us = _Recent()
        self._closed_by_peer = _Recent()  # recently closed peer streams; others below never opened
        # Header block being assembled (HEADERS then CONTINUATIONs).
        self._block_sid = 0
        self._block = bytearray()
        self._block_end_stream = False
        self._block_continuations = 0
        self._block_error = ""
        # Connection state.
        self._preface_left = b"" if client else PREFACE
        self._settings_seen = False
        self._out_frames = 0  # frames queued and not written to the socket yet
        self._out_control = 0  # of which SETTINGS ACK, PING ACK, RST_STREAM
        self._write_blocked = False
        self._blocks_in = 0  # header blocks received (Envoy's inbound streams)
        self._data_frames_out = 0
        self._priority_in = 0
        self._window_updates_in = 0
        self._reset_tokens = float(stream_reset_burst)
        self._reset_at = -1.0
        self._settings_unacked = 1  # our SETTINGS (sent below) until the peer ACKs it
        self._empty_frames = 0
        self._failed = False
        self.goaway_received = False
        self.goaway_sent = False
        self._goaway_last = 0
        # The request fields sent last and whether they ask HEAD: a client sends the same tuple again.
        self._last_request: tuple[tuple[bytes, bytes], ...] = ()
        self._last_head = False

        out = self._out
        if client:
            out += PREFACE
        settings = [(MAX_CONCURRENT_STREAMS, max_concurrent_streams), (INITIAL_WINDOW_SIZE, initial_window_size),
                    (MAX_FRAME_SIZE, max_frame_size), (MAX_HEADER_LIST_SIZE, max_header_list_size)]  # fmt: skip
        if client:
            settings.insert(0, (ENABLE_PUSH, 0))
        if header_table_size != DEFAULT_TABLE_SIZE:
            settings.insert(0, (HEADER_TABLE_SIZE, header_table_size))
        if custom_settings:
            given = dict(custom_settings)
            settings = [(i, v) for i, v in settings if i not in given]
            settings.extend(custom_settings)
        out += settings_frame(settings)
        if connection_window_size > DEFAULT_WINDOW:
            out += window_update_frame(0, connection_window_size - DEFAULT_WINDOW)

    # -- what the caller reads --------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Every byte queued so far, in order (then the queue is empty)."""
        if not self._write_blocked:
            self._out_frames = 0
            self._out_control = 0
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    def write_blocked(self, blocked: bool) -> None:
        """The socket stopped taking our bytes (True) or drains again (False): frames queued while
        it is blocked count against ``max_outbound_frames`` / ``max_outbound_control_frames``."""
        self._write_blocked = blocked
        if not blocked:
            self._out_frames = 0
            self._out_control = 0

    @property
    def settings_pending(self) -> bool:
        """Our SETTINGS is not acknowledged yet."""
        return self._settings_unacked > 0 and not self._failed

    def settings_overdue(self) -> bool:
        """The caller's SETTINGS timeout passed: if our SETTINGS is still unacknowledged, queue
        GOAWAY(SETTINGS_TIMEOUT) and fail (True); otherwise nothing happens (False)."""
        if not self.settings_pending:
            return False
        self._failed = True
        self._inbuf = b""
        self._out += goaway_frame(self._last_peer, SETTINGS_TIMEOUT, b"SETTINGS not acknowledged")
        self.goaway_sent = True
        return True

    @property
    def failed(self) -> bool:
        """A connection error happened (GOAWAY queued); the machine reads nothing more."""
        return self._failed

    @property
    def partial(self) -> bool:
        """A frame started and not complete yet, or a header block waiting for its CONTINUATION."""
        return bool(self._inbuf) or self._block_sid != 0

    @property
    def buffered(self) -> int:
        """Bytes received and held until more arrive (a partial frame, a header block so far)."""
        return len(self._inbuf) + len(self._block)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def next_stream_id(self) -> int:
        """Client role: the id ``send_headers`` opens next."""
        return self._next_local

    @property
    def remote_max_concurrent_streams(self) -> int:
        return self._remote_max_streams

    @property
    def local_streams_open(self) -> int:
        """Streams we opened that are not closed yet (counted against the peer's limit)."""
        return self._local_active

    def sendable(self, stream_id: int) -> int:
        """Body bytes ``send_data`` accepts on ``stream_id`` now: both windows; 0 if it cannot send."""
        st = self._streams.get(stream_id)
        if st is None or (st.state != _OPEN and st.state != _HALF_CLOSED_REMOTE):
            return 0
        room = st.send_window if st.send_window < self._send_window else self._send_window
        return room if room > 0 else 0

    # -- receiving --------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """The events in ``data`` (with what came before and was incomplete)."""
        events: list[Event] = []
        if self._failed:
            return events
        if self._inbuf:
            data = self._inbuf + data
            self._inbuf = b""
        pos = 0
        n = len(data)
        try:
            if self._preface_left:
                want = self._preface_left
                got = data[: len(want)]
                if want[: len(got)] != got:
                    raise _ConnectionError(PROTOCOL_ERROR, "invalid connection preface (preamble)")
                self._preface_left = want[len(got) :]
                pos = len(got)
            while n - pos >= 9:
                length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
                if length > self._max_frame_size:
                    raise _ConnectionError(
                        FRAME_SIZE_ERROR, f"frame of {length} bytes over SETTINGS_MAX_FRAME_SIZE {self._max_frame_size}"
                    )
                end = pos + 9 + length
                if end > n:
                    break
                ftype = data[pos + 3]
                flags = data[pos + 4]
                sid = ((data[pos + 5] & 0x7F) << 24) | (data[pos + 6] << 16) | (data[pos + 7] << 8) | data[pos + 8]
                start = pos + 9
                pos = end
                try:
                    self._frame(events, ftype, flags, sid, data, start, end)
                except _StreamError as stream_exc:
                    self._stream_error(events, stream_exc)
        except _ConnectionError as conn_exc:  # its own name: mypyc types one name per function
            self._fail(events, conn_exc.code, conn_exc.message)
            return events
        if pos < n:
            self._inbuf = data[pos:]
        return events

    def _frame(self, events: list[Event], ftype: int, flags: int, sid: int, data: bytes, start: int, end: int) -> None:
        if self._block_sid and ftype != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, f"frame type {ftype} inside the header block of stream "
                                   f"{self._block_sid} (CONTINUATION expected)")  # fmt: skip
        if self._out_frames > self._max_out_frames:
            raise _ConnectionError(ENHANCE_YOUR_CALM, f"outbound flood: over {self._max_out_frames} frames not read")
        if not self._settings_seen:
            if ftype != SETTINGS or flags & ACK:
                raise _ConnectionError(PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self._settings_seen = True
        if ftype == DATA:
            self._on_data(events, flags, sid, data, start, end)
        elif ftype == HEADERS:
            self._on_headers(events, flags, sid, data, start, end)
        elif ftype == WINDOW_UPDATE:
            self._on_window_update(events, sid, data, start, end)
        elif ftype == RST_STREAM:
            self._on_rst_stream(events, sid, data, start, end)
        elif ftype == SETTINGS:
            self._on_settings(events, flags, sid, data, start, end)
        elif ftype == PING:
            self._on_ping(events, flags, sid, data, start, end)
        elif ftype == CONTINUATION:
            self._on_continuation(events, flags, sid, data, start, end)
        elif ftype == GOAWAY:
            self._on_goaway(events, sid, data, start, end)
        elif ftype == PRIORITY:
            if sid == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if end - start != 5:
                raise _StreamError(sid, FRAME_SIZE_ERROR, f"PRIORITY of {end - start} bytes (5 expected)")
            self._priority_in += 1
            if self._priority_in > self._max_priority_per_stream * (1 + self._blocks_in):
                raise _ConnectionError(ENHANCE_YOUR_CALM, f"PRIORITY flood: {self._priority_in} frames")
            if _u32(data, start) & 0x7FFFFFFF == sid:
                raise _StreamError(sid, PROTOCOL_ERROR, f"stream {sid} depends on itself")
        elif ftype == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE received; push is not enabled")
        # Unknown frame types are ignored (RFC 9113 4.1).

    def _is_idle(self, sid: int) -> bool:
        if (sid & 1) == (1 if self.client else 0):
            return sid >= self._next_local
        return sid > self._last_peer

    def _on_data(self, events: list[Event], flags: int, sid: int, data: bytes, start: int, end: int) -> None:
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        flow = end - start
        if flags & PADDED:
            if flow == 0:
                raise _ConnectionError(FRAME_SIZE_ERROR, "padded DATA without a pad length")
            pad = data[start]
            if pad >= flow:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA padding of {pad} bytes fills its {flow}-byte payload")
            start += 1
            end -= pad
        if flow > self._recv_window:
            raise _ConnectionError(FLOW_CONTROL_ERROR, f"DATA of {flow} bytes over the connection window")
        self._recv_window -= flow
        st = self._streams.get(sid)
        if st is None or st.state == _HALF_CLOSED_REMOTE or st.state == _CLOSED:
            self._credit(flow)  # nobody will pass these bytes on
            if st is None and self._is_idle(sid):
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            if self._reset_by_us.has(sid):
                return
            raise _StreamError(sid, STREAM_CLOSED, f"DATA on closed stream {sid}")
        if flow > st.recv_window:
            self._credit(flow)
            raise _StreamError(sid, FLOW_CONTROL_ERROR, f"DATA of {flow} bytes over stream {sid}'s window")
        st.recv_window -= flow
        size = end - start
        if flow != size:
            self._credit(flow - size)
            st.pending += flow - size
        end_stream = (flags & END_STREAM) != 0
        if size == 0 and not end_stream:
            self._empty_frames += 1
            if self._empty_frames > self._max_empty:
                raise _ConnectionError(ENHANCE_YOUR_CALM, "flood of empty DATA frames")
            return
        self._empty_frames = 0
        if st.content_left >= 0:
            st.content_left -= size
            if st.content_left < 0 or (end_stream and st.content_left):
                raise _StreamError(sid, PROTOCOL_ERROR, "body length differs from content-length")
        st.unacked += size
        events.append(DataReceived(sid, data[start:end] if size else b"", end_stream))
        if end_stream:
            self._remote_end(sid, st)

    def _on_headers(self, events: list[Event], flags: int, sid: int, data: bytes, start: int, end: int) -> None:
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            if end == start:
                raise _ConnectionError(FRAME_SIZE_ERROR, "padded HEADERS without a pad length")
            pad = data[start]
            start += 1
            if pad > end - start:
                raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS padding of {pad} bytes exceeds the payload")
            end -= pad
        self._block_error = ""
        if flags & PRIORITY_FLAG:
            if end - start < 5:
                raise _ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            if _u32(data, start) & 0x7FFFFFFF == sid:
                self._block_error = f"stream {sid} depends on itself"  # after decoding: HPACK stays in step
            start += 5
        if end - start > 2 * self._max_header_list:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "header block over twice SETTINGS_MAX_HEADER_LIST_SIZE")
        end_stream = (flags & END_STREAM) != 0
        if flags & END_HEADERS:
            self._headers(events, sid, end_stream, data[start:end])
            return
        self._block_sid = sid
        self._block = bytearray(data[start:end])
        self._block_end_stream = end_stream
        self._block_continuations = 0

    def _on_continuation(self, events: list[Event], flags: int, sid: int, data: bytes, start: int, end: int) -> None:
        if not self._block_sid or sid != self._block_sid:
            raise _ConnectionError(PROTOCOL_ERROR, f"CONTINUATION on stream {sid} without a HEADERS before it")
        self._block_continuations += 1
        if self._block_continuations > self._max_continuations:
            raise _ConnectionError(ENHANCE_YOUR_CALM, f"more than {self._max_continuations} CONTINUATION frames")
        block = self._block
        block += data[start:end]
        if len(block) > 2 * self._max_header_list:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "header block over twice SETTINGS_MAX_HEADER_LIST_SIZE")
        if flags & END_HEADERS:
            self._block_sid = 0
            self._block = bytearray()
            self._headers(events, sid, self._block_end_stream, bytes(block))

    def _headers(self, events: list[Event], sid: int, end_stream: bool, block: bytes) -> None:
        self._blocks_in += 1
        try:
            fields, size = self._decoder.decode(block)
        except HpackError as exc:
            raise _ConnectionError(COMPRESSION_ERROR, f"header block: {exc}") from None
        too_large = size > self._max_header_list
        st = self._streams.get(sid)
        if st is None:
            if not self._is_idle(sid):
                if self._reset_by_us.has(sid):
                    return
                if self._closed_by_peer.has(sid) or (sid & 1) == (1 if self.client else 0):
                    raise _ConnectionError(STREAM_CLOSED, f"HEADERS on closed stream {sid}")
                raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS opening stream {sid} below stream {self._last_peer}")
            if self.client or sid % 2 == 0:
                raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS opening stream {sid}, which the peer may not open")
            self._last_peer = sid
            if self.goaway_sent and sid > self._goaway_last:
                return  # above our GOAWAY's last stream id: ignored (RFC 9113 6.8)
            if self._block_error:
                raise _StreamError(sid, PROTOCOL_ERROR, self._block_error)
            if self._peer_active >= self._max_concurrent:
                raise _StreamError(sid, REFUSED_STREAM, f"more than {self._max_concurrent} concurrent streams")
            st = _Stream(False, self._remote_initial, self._local_initial)
            self._streams[sid] = st
            self._peer_active += 1
            self._peer_opened += 1
            kind = REQUEST
            st.final_headers = True
            if not too_large:
                st.content_left = _content_length(sid, fields)
        else:
            if st.state == _HALF_CLOSED_REMOTE or st.state == _CLOSED:
                raise _StreamError(sid, STREAM_CLOSED, f"HEADERS on stream {sid} after its END_STREAM")
            if self._block_error:
                raise _StreamError(sid, PROTOCOL_ERROR, self._block_error)
            if st.final_headers or not st.local:
                kind = TRAILERS
                if not end_stream:
                    raise _StreamError(sid, PROTOCOL_ERROR, "trailers without END_STREAM")
            else:
                kind = RESPONSE
                status = b""
                for name, value in fields:
                    if name == b":status":
                        status = value
                        break
                if status[:1] == b"1":
                    kind = INFORMATIONAL
                    if end_stream:
                        raise _StreamError(sid, PROTOCOL_ERROR, "1xx response with END_STREAM")
                else:
                    st.final_headers = True
                    # A response to HEAD, 204 and 304 declare a length they do not carry (RFC 9110 8.6).
                    if not too_large and not st.head_request and status != b"204" and status != b"304":
                        st.content_left = _content_length(sid, fields)
        if end_stream and st.content_left > 0:
            raise _StreamError(sid, PROTOCOL_ERROR, "body length differs from content-length")
        events.append(HeadersReceived(sid, fields, end_stream, kind, size, too_large))
        if end_stream:
            self._remote_end(sid, st)

    def _on_window_update(self, events: list[Event], sid: int, data: bytes, start: int, end: int) -> None:
        if end - start != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, f"WINDOW_UPDATE of {end - start} bytes (4 expected)")
        self._window_updates_in += 1
        if self._max_window_updates_per_data and self._window_updates_in > 1 + 2 * (
            self._blocks_in + self._max_window_updates_per_data * self._data_frames_out
        ):
            raise _ConnectionError(ENHANCE_YOUR_CALM, f"WINDOW_UPDATE flood: {self._window_updates_in} frames")
        increment = _u32(data, start) & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            events.append(WindowUpdated(0))
            return
        st = self._streams.get(sid)
        if st is None:
            if self._is_idle(sid):
                raise _ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # a closed stream: the peer sent it before it knew
        if increment == 0:
            raise _StreamError(sid, PROTOCOL_ERROR, f"WINDOW_UPDATE of 0 on stream {sid}")
        st.send_window += increment
        if st.send_window > MAX_WINDOW:
            raise _StreamError(sid, FLOW_CONTROL_ERROR, f"stream {sid}'s window over 2^31-1")
        if st.state == _OPEN or st.state == _HALF_CLOSED_REMOTE:
            events.append(WindowUpdated(sid))

    def _on_rst_stream(self, events: list[Event], sid: int, data: bytes, start: int, end: int) -> None:
        if end - start != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, f"RST_STREAM of {end - start} bytes (4 expected)")
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        st = self._streams.get(sid)
        if st is None:
            if self._is_idle(sid):
                raise _ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        code = _u32(data, start)
        self._forget(sid, st)
        events.append(StreamReset(sid, code, True))
        if not st.local:
            self._reset_taken()
        if not st.local and st.premature:
            self._premature_resets += 1
            opened = self._peer_opened
            if opened >= self._premature_min and self._premature_resets * 2 >= opened:
                raise _ConnectionError(
                    ENHANCE_YOUR_CALM, f"rapid reset: {self._premature_resets} of {opened} streams reset early"
                )

    def _on_settings(self, events: list[Event], flags: int, sid: int, data: bytes, start: int, end: int) -> None:
        if sid != 0:
            raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS on stream {sid}")
        length = end - start
        if flags & ACK:
            if length:
                raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if self._settings_unacked:
                self._settings_unacked -= 1
                if self._header_table_size < DEFAULT_TABLE_SIZE:
                    self._decoder.limit_table(self._header_table_size)
            return
        if length % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, f"SETTINGS of {length} bytes (a multiple of 6 expected)")
        if length // 6 > self._max_settings_entries:
            raise _ConnectionError(ENHANCE_YOUR_CALM, f"SETTINGS with more than {self._max_settings_entries} entries")
        grew = False
        for i in range(start, end, 6):
            ident = (data[i] << 8) | data[i + 1]
            value = _u32(data, i + 2)
            if ident == HEADER_TABLE_SIZE:
                self._encoder.set_max_table_size(value)
            elif ident == ENABLE_PUSH:
                if value > 1 or (self.client and value == 1):
                    raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH of {value}")
            elif ident == MAX_CONCURRENT_STREAMS:
                self._remote_max_streams = value
            elif ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE of {value}")
                delta = value - self._remote_initial
                self._remote_initial = value
                if delta:
                    for st in self._streams.values():
                        st.send_window += delta
                        if st.send_window > MAX_WINDOW:
                            raise _ConnectionError(FLOW_CONTROL_ERROR, "a stream's window over 2^31-1")
                    grew = grew or delta > 0
            elif ident == MAX_FRAME_SIZE:
                if not MIN_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
                    raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE of {value}")
                self._remote_max_frame = value
            elif ident == MAX_HEADER_LIST_SIZE:
                self.remote_max_header_list_size = value
        self._out += SETTINGS_ACK
        self._control_queued()
        events.append(SettingsChanged(grew, self._remote_max_streams))

    def _on_ping(self, events: list[Event], flags: int, sid: int, data: bytes, start: int, end: int) -> None:
        if end - start != 8:
            raise _ConnectionError(FRAME_SIZE_ERROR, f"PING of {end - start} bytes (8 expected)")
        if sid != 0:
            raise _ConnectionError(PROTOCOL_ERROR, f"PING on stream {sid}")
        if flags & ACK:
            events.append(PingAcknowledged(data[start:end]))
            return
        self._out += ping_frame(data[start:end], True)
        self._control_queued()

    def _on_goaway(self, events: list[Event], sid: int, data: bytes, start: int, end: int) -> None:
        if sid != 0:
            raise _ConnectionError(PROTOCOL_ERROR, f"GOAWAY on stream {sid}")
        if end - start < 8:
            raise _ConnectionError(FRAME_SIZE_ERROR, f"GOAWAY of {end - start} bytes (8 at least)")
        last = _u32(data, start) & 0x7FFFFFFF
        code = _u32(data, start + 4)
        self.goaway_received = True
        refused = [s for s, st in self._streams.items() if st.local and s > last]
        for s in refused:
            self._forget(s, self._streams[s])
        events.append(GoAwayReceived(last, code, data[start + 8 : end], refused))

    def _control_queued(self) -> None:
        """A SETTINGS ACK, PING ACK or RST_STREAM was queued (Envoy's outbound control frames)."""
        self._out_frames += 1
        self._out_control += 1
        if self._out_control > self._max_out_control:
            raise _ConnectionError(
                ENHANCE_YOUR_CALM,
                f"outbound flood: over {self._max_out_control} SETTINGS/PING ACKs and RST_STREAMs not read",
            )

    def _reset_taken(self) -> None:
        """The peer reset a stream it opened: one token of the stream-reset bucket."""
        now = self._clock()
        if self._reset_at >= 0.0:
            self._reset_tokens = min(self._reset_burst, self._reset_tokens + (now - self._reset_at) * self._reset_rate)
        self._reset_at = now
        if self._reset_tokens < 1.0:
            raise _ConnectionError(
                ENHANCE_YOUR_CALM, f"rapid reset: over {int(self._reset_burst)} streams reset at {self._reset_rate:g}/s"
            )
        self._reset_tokens -= 1.0

    def _stream_error(self, events: list[Event], exc: _StreamError) -> None:
        sid = exc.stream_id
        st = self._streams.get(sid)
        if st is not None:
            self._forget(sid, st)
        self._remember_reset(sid)
        self._out += rst_stream_frame(sid, exc.code)
        events.append(StreamReset(sid, exc.code, False, exc.message))
        self._control_queued()

    def _fail(self, events: list[Event], code: int, message: str) -> None:
        self._failed = True
        self._inbuf = b""
        self._out += goaway_frame(self._last_peer, code, message.encode("utf-8", "replace")[:256])
        self.goaway_sent = True
        events.append(ConnectionFailed(code, f"{error_name(code)}: {message}"))

    # -- stream bookkeeping -----------------------------------------------------------------------
    def _remote_end(self, sid: int, st: _Stream) -> None:
        if st.state == _OPEN:
            st.state = _HALF_CLOSED_REMOTE
        else:
            self._close(sid, st)

    def _local_end(self, sid: int, st: _Stream) -> None:
        st.premature = False
        if st.state == _OPEN:
            st.state = _HALF_CLOSED_LOCAL
        else:
            self._close(sid, st)

    def _close(self, sid: int, st: _Stream) -> None:
        if st.state != _CLOSED:
            st.state = _CLOSED
            if st.local:
                self._local_active -= 1
            else:
                self._peer_active -= 1
                self._closed_by_peer.add(sid)
        if not st.unacked:
            self._streams.pop(sid, None)

    def _forget(self, sid: int, st: _Stream) -> None:
        """Drop a stream now, giving its unacknowledged bytes back to the connection window."""
        if st.unacked:
            self._credit(st.unacked)
            st.unacked = 0
        self._close(sid, st)

    def _remember_reset(self, sid: int) -> None:
        self._reset_by_us.add(sid)

    def _credit(self, nbytes: int) -> None:
        """Give ``nbytes`` back to the connection window, in WINDOW_UPDATEs of half the window."""
        self._recv_pending += nbytes
        if self._recv_pending * 2 >= self._recv_target:
            self._out += window_update_frame(0, self._recv_pending)
            self._recv_window += self._recv_pending
            self._recv_pending = 0

    # -- sending ----------------------------------------------------------------------------------
    def _sending_stream(self, sid: int) -> _Stream:
        st = self._streams.get(sid)
        if st is None or st.state == _HALF_CLOSED_LOCAL or st.state == _CLOSED:
            if st is None and self._is_idle(sid):
                raise UsageError(f"stream {sid} is not open")
            raise StreamClosedError(f"stream {sid} is closed for sending")
        return st

    def send_headers(self, stream_id: int, fields: _Fields, end_stream: bool = False) -> None:
        """A header block on ``stream_id``: a request opening it (client role, ``next_stream_id``),
        a response or trailers (which must end the stream). The same tuple of fields sent again is
        encoded with no lookup (``Encoder.encode``)."""
        st = self._streams.get(stream_id)
        if st is None and self.client and stream_id == self._next_local:
            if self.goaway_received:
                raise UsageError("the peer sent GOAWAY: open streams on another connection")
            if self._local_active >= self._remote_max_streams:
                raise UsageError(f"the peer allows {self._remote_max_streams} concurrent streams")
            st = _Stream(True, self._remote_initial, self._local_initial)
            if fields is self._last_request:
                st.head_request = self._last_head
            else:
                st.head_request = (b":method", b"HEAD") in fields
                if isinstance(fields, tuple):  # a list may change; a tuple sent again is the same block
                    self._last_request = fields
                    self._last_head = st.head_request
            self._streams[stream_id] = st
            self._next_local += 2
            self._local_active += 1
        else:
            st = self._sending_stream(stream_id)
        block = self._encoder.encode(fields)
        step = self._remote_max_frame
        out = self._out
        first = block[:step]
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if len(block) <= step else 0)
        out += frame_header(len(first), HEADERS, flags, stream_id)
        out += first
        self._out_frames += 1
        for at in range(step, len(block), step):
            part = block[at : at + step]
            out += frame_header(len(part), CONTINUATION, END_HEADERS if at + step >= len(block) else 0, stream_id)
            out += part
            self._out_frames += 1
        if end_stream:
            self._local_end(stream_id, st)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Body bytes on ``stream_id``, at most ``sendable(stream_id)`` of them."""
        st = self._sending_stream(stream_id)
        size = len(data)
        if size:
            room = st.send_window if st.send_window < self._send_window else self._send_window
            if size > room:
                raise UsageError(f"{size} bytes on stream {stream_id} exceed its send window of {max(room, 0)}")
            st.send_window -= size
            self._send_window -= size
        out = self._out
        step = self._remote_max_frame
        if size <= step:
            out += frame_header(size, DATA, END_STREAM if end_stream else 0, stream_id)
            out += data
            self._data_frames_out += 1
            self._out_frames += 1
        else:
            n = (size + step - 1) // step
            self._data_frames_out += n
            self._out_frames += n
            view = memoryview(data)
            for at in range(0, size, step):
                part = view[at : at + step]
                last = at + step >= size
                out += frame_header(len(part), DATA, END_STREAM if end_stream and last else 0, stream_id)
                out += part
        if end_stream:
            self._local_end(stream_id, st)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", True)

    def reset_stream(self, stream_id: int, error_code: int = 0x8) -> None:
        """RST_STREAM (default CANCEL); the stream's unacknowledged bytes go back to the connection."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        self._forget(stream_id, st)
        self._remember_reset(stream_id)
        self._out += rst_stream_frame(stream_id, error_code)
        self._out_frames += 1
        self._out_control += 1

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        """``nbytes`` of the DATA received on ``stream_id`` were passed on: give them back to the
        peer's windows (WINDOW_UPDATE once half a window has built up)."""
        st = self._streams.get(stream_id)
        if st is None or nbytes <= 0:
            return
        if nbytes > st.unacked:
            nbytes = st.unacked
        st.unacked -= nbytes
        self._credit(nbytes)
        if st.state == _OPEN or st.state == _HALF_CLOSED_LOCAL:
            st.pending += nbytes
            if st.pending * 2 >= self._local_initial:
                self._out += window_update_frame(stream_id, st.pending)
                st.recv_window += st.pending
                st.pending = 0
        elif st.state == _CLOSED and not st.unacked:
            del self._streams[stream_id]

    def ping(self, opaque: bytes) -> None:
        if len(opaque) != 8:
            raise UsageError(f"PING carries 8 bytes, got {len(opaque)}")
        self._out += ping_frame(opaque, False)

    def goaway(self, error_code: int = NO_ERROR, last_stream_id: int = -1, debug: bytes = b"") -> None:
        """GOAWAY: the peer's streams above ``last_stream_id`` (default: the last it opened) are
        ignored from now on; the others are still served."""
        last = self._last_peer if last_stream_id < 0 else last_stream_id
        self.goaway_sent = True
        self._goaway_last = last
        self._out += goaway_frame(last, error_code, debug)


__all__ = [
    "INFORMATIONAL", "REQUEST", "RESPONSE", "TRAILERS", "ConnectionFailed", "DataReceived", "Event",
    "GoAwayReceived", "HeadersReceived", "Machine", "PingAcknowledged", "SettingsChanged", "StreamClosedError",
    "StreamReset", "UsageError", "WindowUpdated",
]  # fmt: skip
