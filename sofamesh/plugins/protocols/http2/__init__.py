"""The ``http2`` protocol plugin: HTTP/2, gRPC and Dubbo 3 Triple (and HSF3, which is Triple)."""

from __future__ import annotations

from sofamesh.plugins.protocols.http2.codec import (
    ALPN_PROTOCOLS,
    PREFACE,
    Http2Codec,
    Http2CodecFactory,
    Http2Event,
)
from sofamesh.plugins.protocols.http2.events import StreamReset, WindowOpened

__all__ = [
    "ALPN_PROTOCOLS",
    "PREFACE",
    "Http2Codec",
    "Http2CodecFactory",
    "Http2Event",
    "StreamReset",
    "WindowOpened",
]
