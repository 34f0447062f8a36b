"""The ``dubbo`` protocol plugin: Dubbo 2 (dubbo:// over TCP) with hessian2 bodies."""

from __future__ import annotations

from sofamesh.plugins.protocols.dubbo.codec import PROTOCOL, DubboCodec, DubboCodecFactory
from sofamesh.plugins.protocols.dubbo.hessian import HessianError, HessianReader

__all__ = ["PROTOCOL", "DubboCodec", "DubboCodecFactory", "HessianError", "HessianReader"]
