"""HTTP/JSON to Dubbo and SOFA RPC transcoding at the edge: JSON values to Hessian by declared Java
type and RPC results back to JSON. Only routes that name the transcoder pay for it."""

from __future__ import annotations

from sofamesh.plugins.filters.transcoder.java_json import (
    ArgumentError,
    dubbo_descriptor,
    to_hessian,
    to_json,
)

__all__ = ["ArgumentError", "dubbo_descriptor", "to_hessian", "to_json"]
