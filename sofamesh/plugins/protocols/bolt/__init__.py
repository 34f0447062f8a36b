"""The ``bolt`` protocol plugin: SOFA Bolt v1/v2 framing for header-only routing."""

from __future__ import annotations

from sofamesh.plugins.protocols.bolt.codec import BoltCodec, BoltCodecFactory, split_service
from sofamesh.plugins.protocols.bolt.frames import Framing

__all__ = ["BoltCodec", "BoltCodecFactory", "Framing", "split_service"]
