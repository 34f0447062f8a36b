"""The ``http1`` protocol plugin: HTTP/1.0 and 1.1, keep-alive, pipelining, chunked bodies streamed."""

from __future__ import annotations

from sofamesh.plugins.protocols.http1.codec import Http1Codec, Http1CodecFactory

__all__ = ["Http1Codec", "Http1CodecFactory"]
