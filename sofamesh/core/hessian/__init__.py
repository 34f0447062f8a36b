"""Hessian 2.0, once for the whole package: a reader (routing reads, skips, whole values) and a
writer, sans-IO, shared by the Dubbo and Bolt codecs, the registries and the transcoder."""

from __future__ import annotations

from sofamesh.core.hessian.reader import (
    HIGH_SURROGATE_MAX,
    HIGH_SURROGATE_MIN,
    HessianError,
    HessianReader,
    is_structured_tag,
)
from sofamesh.core.hessian.values import JavaLong, JavaObject, TypedList, TypedMap
from sofamesh.core.hessian.writer import HessianWriter, encode, encode_string

__all__ = [
    "HIGH_SURROGATE_MAX",
    "HIGH_SURROGATE_MIN",
    "HessianError",
    "HessianReader",
    "HessianWriter",
    "JavaLong",
    "JavaObject",
    "TypedList",
    "TypedMap",
    "encode",
    "encode_string",
    "is_structured_tag",
]
