"""HTTP/2 stream events the core event set cannot express yet. Frozen, slotted, final.

Both are emitted by :class:`~sofamesh.plugins.protocols.http2.codec.Http2Codec` from ``next_event()``
next to the core events. They belong in ``sofamesh/core/events.py`` (and in its ``Event`` union)
once the kernel drives streams; ``docs/protocols.md`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer sent RST_STREAM: stream ``stream_id`` is gone in both directions.

    ``error_code`` is the HTTP/2 error code (0 NO_ERROR, 8 CANCEL, ...) and ``reason`` its name.
    Bytes the peer sent on it and the kernel never acknowledged are returned to the connection
    window by the codec, so the kernel only has to drop the stream.
    """

    stream_id: int
    error_code: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        if self.stream_id <= 0:
            raise ValueError(f"StreamReset.stream_id must be > 0, got {self.stream_id}")


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The peer gave send window back: ``Http2Codec.sendable(stream_id)`` may have grown.

    ``stream_id == 0`` means the connection window (or SETTINGS_INITIAL_WINDOW_SIZE) grew, so every
    stream blocked on flow control may proceed.
    """

    stream_id: int = 0


__all__ = ["StreamReset", "WindowOpened"]
