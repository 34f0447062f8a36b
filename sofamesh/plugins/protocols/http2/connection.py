"""The ``h2`` connection the codec drives: ``H2Connection`` with the leaner HPACK of
``compression`` and without the per-frame trace formatting. Pure, no I/O.

``H2Connection._receive_frame`` builds ``repr(frame)`` for every received frame to hand it to a
trace logger that, unless a debug logger is configured (the codec never configures one), drops
it: that string cost about a seventh of receiving. ``_receive_frame`` below is h2's own (4.1 to
4.4) less that line; if h2 changes the method's shape, ``LEAN_RECEIVE`` turns false and the
library's own method is used unchanged.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Final

import h2.connection
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from hyperframe.frame import RstStreamFrame

from sofamesh.plugins.protocols.http2 import compression

if TYPE_CHECKING:
    import h2.config
    import h2.events
    from hyperframe.frame import Frame


def _receive_frame_is_known() -> bool:
    try:
        src = inspect.getsource(h2.connection.H2Connection._receive_frame)
    except (OSError, TypeError):
        return False
    return all(s in src for s in (
        "self._frame_dispatch_table[frame.__class__](frame)", "except StreamClosedError as e:",
        "except StreamIDTooLowError as e:", "self._stream_is_closed_by_reset(e.stream_id)",
        "self._stream_is_closed_by_end(e.stream_id)", "events = e._events", "self._prepare_for_sending(frames)",
    ))


LEAN_RECEIVE: Final = _receive_frame_is_known()


class Connection(h2.connection.H2Connection):
    """``H2Connection`` with ``compression``'s HPACK encoder and decoder."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.encoder = compression.Encoder()
        decoder = compression.Decoder()
        decoder.max_header_list_size = self.decoder.max_header_list_size
        self.decoder = decoder

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


__all__ = ["LEAN_RECEIVE", "Connection"]
