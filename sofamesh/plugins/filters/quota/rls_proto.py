"""Envoy's rate limit service v3 messages (``envoy.service.ratelimit.v3``), built at import time from
a descriptor written here, in a private ``DescriptorPool``.

Only the fields sofamesh reads or writes are declared; field numbers and types are Envoy's, so
the bytes are the same as Envoy's generated stubs produce (unknown fields are kept by the parser).
The data plane so needs no generated-code package (PyPI ``xds-protos``, used by Pilot, ships an
old copy of ``opentelemetry/proto`` that ``scripts/reinstall-otel-proto.sh`` repairs after install),
and the private pool never collides with xds-protos's registration of the same names in the
default pool. ``tests/conformance/test_rls_envoy_stubs.py`` checks the bytes against Envoy's stubs.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
METHOD = f"/{SERVICE}/ShouldRateLimit"

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _msg(parent: Any, name: str, *fields: tuple[str, int, int, int, str]) -> Any:
    m = parent.add() if hasattr(parent, "add") else parent.message_type.add()
    m.name = name
    for fname, number, ftype, label, type_name in fields:
        f = m.field.add()
        f.name, f.number, f.type, f.label = fname, number, ftype, label
        if type_name:
            f.type_name = type_name
    return m


def _enum(parent: Any, name: str, values: list[str]) -> None:
    e = parent.enum_type.add()
    e.name = name
    for i, v in enumerate(values):
        ev = e.value.add()
        ev.name, ev.number = v, i


def _build() -> dict[str, Any]:
    # One file: the message names on the wire do not matter, only field numbers and types. Envoy
    # declares RateLimitDescriptor in envoy.extensions.common.ratelimit.v3; here it sits beside the
    # service messages, and two well-known types are redeclared with their field numbers.
    P = ".envoy.service.ratelimit.v3."
    f = descriptor_pb2.FileDescriptorProto(name="sofamesh/envoy_rls_v3.proto", package="envoy.service.ratelimit.v3",
                                           syntax="proto3")
    _msg(f, "UInt64Value", ("value", 1, _F.TYPE_UINT64, _OPT, ""))
    _msg(f, "Duration", ("seconds", 1, _F.TYPE_INT64, _OPT, ""), ("nanos", 2, _F.TYPE_INT32, _OPT, ""))
    d = _msg(f, "RateLimitDescriptor",
             ("entries", 1, _F.TYPE_MESSAGE, _REP, P + "RateLimitDescriptor.Entry"),
             ("limit", 2, _F.TYPE_MESSAGE, _OPT, P + "RateLimitDescriptor.RateLimitOverride"),
             ("hits_addend", 3, _F.TYPE_MESSAGE, _OPT, P + "UInt64Value"))
    _msg(d.nested_type, "Entry", ("key", 1, _F.TYPE_STRING, _OPT, ""), ("value", 2, _F.TYPE_STRING, _OPT, ""))
    _msg(d.nested_type, "RateLimitOverride", ("requests_per_unit", 1, _F.TYPE_UINT32, _OPT, ""),
         ("unit", 2, _F.TYPE_ENUM, _OPT, P + "RateLimitResponse.RateLimit.Unit"))
    _msg(f, "RateLimitRequest", ("domain", 1, _F.TYPE_STRING, _OPT, ""),
         ("descriptors", 2, _F.TYPE_MESSAGE, _REP, P + "RateLimitDescriptor"),
         ("hits_addend", 3, _F.TYPE_UINT32, _OPT, ""))
    r = _msg(f, "RateLimitResponse",
             ("overall_code", 1, _F.TYPE_ENUM, _OPT, P + "RateLimitResponse.Code"),
             ("statuses", 2, _F.TYPE_MESSAGE, _REP, P + "RateLimitResponse.DescriptorStatus"))
    _enum(r, "Code", ["UNKNOWN", "OK", "OVER_LIMIT"])
    rl = _msg(r.nested_type, "RateLimit", ("requests_per_unit", 1, _F.TYPE_UINT32, _OPT, ""),
              ("unit", 2, _F.TYPE_ENUM, _OPT, P + "RateLimitResponse.RateLimit.Unit"),
              ("name", 3, _F.TYPE_STRING, _OPT, ""))
    _enum(rl, "Unit", ["UNKNOWN", "SECOND", "MINUTE", "HOUR", "DAY", "MONTH", "YEAR", "WEEK"])
    _msg(r.nested_type, "DescriptorStatus",
         ("code", 1, _F.TYPE_ENUM, _OPT, P + "RateLimitResponse.Code"),
         ("current_limit", 2, _F.TYPE_MESSAGE, _OPT, P + "RateLimitResponse.RateLimit"),
         ("limit_remaining", 3, _F.TYPE_UINT32, _OPT, ""),
         ("duration_until_reset", 4, _F.TYPE_MESSAGE, _OPT, P + "Duration"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    get = message_factory.GetMessageClass
    return {name: get(pool.FindMessageTypeByName(P[1:] + name))
            for name in ("RateLimitRequest", "RateLimitResponse", "RateLimitDescriptor")} | {"pool": pool}


_M = _build()
RateLimitRequest: Any = _M["RateLimitRequest"]
RateLimitResponse: Any = _M["RateLimitResponse"]
RateLimitDescriptor: Any = _M["RateLimitDescriptor"]
POOL: Any = _M["pool"]

OK = 1
OVER_LIMIT = 2
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
                "year": 365 * 86400}
UNIT_NUMBER = {"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 5, "year": 6, "week": 7}

__all__ = ["METHOD", "OK", "OVER_LIMIT", "POOL", "SERVICE", "UNIT_NUMBER", "UNIT_SECONDS", "RateLimitDescriptor",
           "RateLimitRequest", "RateLimitResponse"]
