"""The ``h2`` connection the codec drives: ``H2Connection`` with the leaner HPACK of
``compression``, without the per-frame trace formatting, and with a short path for the frames a
proxy sends most. Pure, no I/O.

* ``H2Connection._receive_frame`` builds ``repr(frame)`` for every received frame to hand it to a
  trace logger that, unless a debug logger is configured (the codec never configures one), drops
  it: that string cost about a seventh of receiving. ``_receive_frame`` below is h2's own (4.1 to
  4.4) less that line.
* ``send_data`` of one unpadded frame within the windows, and ``send_headers`` without priority
  (requests opening a stream, responses, trailers; not 1xx responses) make the same state-machine inputs,
  window updates and HPACK encoding as h2's, in the same order, and write the frame bytes
  directly instead of building ``hyperframe`` objects, converting every field again and computing
  validation flags the codec turned off. Anything else goes to h2's own methods.

Each short path is used only while the installed h2's method still has the shape it copies
(checked once at import; ``LEAN_RECEIVE`` / ``LEAN_SEND``, and a unit test says when they turn
false); otherwise the library's own methods run unchanged.
"""

from __future__ import annotations

import inspect
import struct
from typing import TYPE_CHECKING, Any, Final

import h2.connection
import h2.stream
from h2.connection import AllowedStreamIDs, ConnectionInputs
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError, StreamIDTooLowError, TooManyStreamsError
from h2.stream import StreamInputs
from h2.utilities import authority_from_headers, extract_method_header, is_informational_response
from hyperframe.frame import RstStreamFrame

from sofamesh.plugins.protocols.http2 import compression

if TYPE_CHECKING:
    import h2.config
    import h2.events
    from hyperframe.frame import Frame


def _has_shape(method: Any, *lines: str) -> bool:
    """Whether h2's ``method`` still holds each of ``lines`` (the code a short path copies)."""
    try:
        src = inspect.getsource(method)
    except (OSError, TypeError):
        return False
    return all(line in src for line in lines)


LEAN_RECEIVE: Final = _has_shape(
    h2.connection.H2Connection._receive_frame,
    "self._frame_dispatch_table[frame.__class__](frame)", "except StreamClosedError as e:",
    "except StreamIDTooLowError as e:", "self._stream_is_closed_by_reset(e.stream_id)",
    "self._stream_is_closed_by_end(e.stream_id)", "events = e._events", "self._prepare_for_sending(frames)",
)
LEAN_SEND: Final = (
    _has_shape(
        h2.connection.H2Connection.send_data,
        "self.state_machine.process_input(ConnectionInputs.SEND_DATA)",
        "frames = self.streams[stream_id].send_data(", "self._prepare_for_sending(frames)",
        "self.outbound_flow_control_window -= frame_size",
    )
    and _has_shape(
        h2.stream.H2Stream.send_data,
        "self.state_machine.process_input(StreamInputs.SEND_DATA)",
        "self.state_machine.process_input(StreamInputs.SEND_END_STREAM)",
        "self.outbound_flow_control_window -= df.flow_controlled_length",
    )
    and _has_shape(
        h2.connection.H2Connection.send_headers,
        "self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)",
        "stream.send_headers(", "self._prepare_for_sending(frames)", "if stream_id not in self.streams:",
        "max_open_streams = self.remote_settings.max_concurrent_streams", "value = self.open_outbound_streams",
        "raise TooManyStreamsError(msg)",
        "stream_id, AllowedStreamIDs(self.config.client_side),",
    )
    and _has_shape(
        h2.stream.H2Stream.send_headers,
        "input_ = StreamInputs.SEND_HEADERS", "is_informational_response(bytes_headers)",
        "events = self.state_machine.process_input(input_)", "self._build_headers_frames(",
        "self.state_machine.process_input(StreamInputs.SEND_END_STREAM)",
        "if self.state_machine.trailers_sent and not end_stream:",
        "self._authority = authority_from_headers(bytes_headers)",
        "self.request_method = extract_method_header(bytes_headers)",
    )
    and _has_shape(
        h2.stream.H2Stream._build_headers_frames,
        "encoded_headers = encoder.encode(headers)", "self.max_outbound_frame_size",
    )
)
_FRAME_HEAD: Final = struct.Struct(">BHBBL")  # length (24 bits), type, flags, stream id
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS = 0x1, 0x4


class Connection(h2.connection.H2Connection):
    """``H2Connection`` with ``compression``'s HPACK encoder and decoder."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.encoder = compression.Encoder()
        decoder = compression.Decoder()
        decoder.max_header_list_size = self.decoder.max_header_list_size
        self.decoder = decoder

    if LEAN_SEND:
        def send_data(self, stream_id: int, data: Any, end_stream: bool = False,
                      pad_length: Any = None) -> None:
            stream = self.streams.get(stream_id)
            size = len(data)
            if (stream is None or pad_length is not None or size > self.max_outbound_frame_size
                    or size > self.outbound_flow_control_window or size > stream.outbound_flow_control_window):
                super().send_data(stream_id, data, end_stream, pad_length)  # h2 checks and raises
                return
            self.state_machine.process_input(ConnectionInputs.SEND_DATA)
            machine = stream.state_machine
            machine.process_input(StreamInputs.SEND_DATA)
            flags = 0
            if end_stream:
                machine.process_input(StreamInputs.SEND_END_STREAM)
                flags = _END_STREAM
            stream.outbound_flow_control_window -= size
            self.outbound_flow_control_window -= size
            out = self._data_to_send
            out += _FRAME_HEAD.pack(size >> 16, size & 0xFFFF, _DATA, flags, stream_id)
            out += data

        def send_headers(self, stream_id: int, headers: Any, end_stream: bool = False,
                         priority_weight: Any = None, priority_depends_on: Any = None,
                         priority_exclusive: Any = None) -> None:
            stream = self.streams.get(stream_id)
            if (priority_weight is not None or priority_depends_on is not None or priority_exclusive is not None
                    or (stream is None and not self.config.client_side)
                    or (not self.config.client_side and is_informational_response(headers))):
                super().send_headers(stream_id, headers, end_stream, priority_weight, priority_depends_on,
                                     priority_exclusive)
                return
            if stream is None:  # a request opening a stream: h2's concurrency check, then the stream
                limit = self.remote_settings.max_concurrent_streams
                if self.open_outbound_streams + 1 > limit:
                    raise TooManyStreamsError(f"Max outbound streams is {limit}, {self.open_outbound_streams} open")
                self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
                stream = self._get_or_create_stream(stream_id, AllowedStreamIDs.ODD)
            else:
                self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
            machine = stream.state_machine
            machine.process_input(StreamInputs.SEND_HEADERS)
            block = self.encoder.encode(headers)
            if end_stream:
                machine.process_input(StreamInputs.SEND_END_STREAM)
            if machine.trailers_sent and not end_stream:
                raise ProtocolError("Trailers must have END_STREAM set.")
            if machine.client and stream._authority is None:
                stream._authority = authority_from_headers(headers)
            stream.request_method = extract_method_header(headers)
            step = stream.max_outbound_frame_size or self.max_outbound_frame_size
            out = self._data_to_send
            first = block[:step]
            flags = (_END_STREAM if end_stream else 0) | (_END_HEADERS if len(block) <= step else 0)
            out += _FRAME_HEAD.pack(len(first) >> 16, len(first) & 0xFFFF, _HEADERS, flags, stream_id)
            out += first
            for start in range(step, len(block), step):
                part = block[start : start + step]
                flags = _END_HEADERS if start + step >= len(block) else 0
                out += _FRAME_HEAD.pack(len(part) >> 16, len(part) & 0xFFFF, _CONTINUATION, flags, stream_id)
                out += part

    if LEAN_RECEIVE:
        def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
            events: list[h2.events.Event]
            try:
                frames, events = self._frame_dispatch_table[frame.__class__](frame)
            except StreamClosedError as e:
                # Closed by RST_STREAM: a stream error, answered with RST_STREAM; otherwise re-raised
                # as the connection error it is.
                if self._stream_is_closed_by_reset(e.stream_id):
                    f = RstStreamFrame(e.stream_id)
                    f.error_code = e.error_code
                    self._prepare_for_sending([f])
                    events = e._events
                else:
                    raise
            except StreamIDTooLowError as e:
                # A stream closed by RST_STREAM is a stream error; one closed by END_STREAM or
                # implicitly (a higher id was opened) is a connection error.
                if self._stream_is_closed_by_reset(e.stream_id):
                    f = RstStreamFrame(e.stream_id)
                    f.error_code = ErrorCodes.STREAM_CLOSED
                    self._prepare_for_sending([f])
                    events = []
                elif self._stream_is_closed_by_end(e.stream_id):
                    raise StreamClosedError(e.stream_id) from e
                else:
                    raise
            else:
                self._prepare_for_sending(frames)
            return events


__all__ = ["LEAN_RECEIVE", "LEAN_SEND", "Connection"]
