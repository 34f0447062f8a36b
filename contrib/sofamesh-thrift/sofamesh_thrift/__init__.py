"""sofamesh-thrift: Apache Thrift (framed transport, binary protocol) as a sofamesh protocol plugin."""

from __future__ import annotations

from sofamesh_thrift.codec import ThriftCodec, ThriftCodecFactory

__version__ = "0.1.0"

__all__ = ["ThriftCodec", "ThriftCodecFactory", "__version__"]
