"""The ``dubbo`` protocol plugin: Dubbo 2 (dubbo:// over TCP) with hessian2 bodies."""

from __future__ import annotations

from sofamesh.core.hessian import HessianError, HessianReader
from sofamesh.plugins.protocols.dubbo.codec import PROTOCOL, DubboCodec, DubboCodecFactory

__all__ = ["PROTOCOL", "DubboCodec", "DubboCodecFactory", "HessianError", "HessianReader"]
