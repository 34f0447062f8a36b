"""A Dubbo 2 call built from JSON arguments, and its response read back as a result or an exception.

Pure: values in, frame bytes out, and back. No sockets, no event loop, no logging. A call with
declared Java types encodes each argument as its type (``java_json.to_hessian``); a call without
goes out as Dubbo's generic call, ``$invoke(method, null, args)`` with attachment ``generic=true``,
as Dubbo-go-pixiu sends it: the provider's GenericFilter finds the method by name and converts the
JSON-shaped arguments (maps for POJOs) to the method's own types.
"""

from __future__ import annotations

from typing import Final

from sofamesh.core.hessian import HessianReader, HessianWriter, JavaObject, TypedList
from sofamesh.plugins.filters.transcoder.java_json import dubbo_descriptor, to_hessian, untyped
from sofamesh.plugins.filters.transcoder.result import RpcResult
from sofamesh.plugins.protocols.dubbo import frames

__all__ = ["GENERIC_DESCRIPTOR", "dubbo_request", "read_dubbo_response"]

GENERIC_METHOD: Final = "$invoke"
GENERIC_DESCRIPTOR: Final = "Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;"

# Dubbo response statuses that are not a provider's exception: the edge's own error classes.
_STATUS_NAMES: Final[dict[int, str]] = {
    frames.STATUS_CLIENT_TIMEOUT: "ClientTimeout",
    frames.STATUS_SERVER_TIMEOUT: "ServerTimeout",
    frames.STATUS_BAD_REQUEST: "BadRequest",
    frames.STATUS_BAD_RESPONSE: "BadResponse",
    frames.STATUS_SERVICE_NOT_FOUND: "ServiceNotFound",
    frames.STATUS_SERVICE_ERROR: "ServiceError",
    frames.STATUS_SERVER_ERROR: "ServerError",
    frames.STATUS_CLIENT_ERROR: "ClientError",
    frames.STATUS_THREADPOOL_EXHAUSTED: "ThreadPoolExhausted",
}


def dubbo_request(
    request_id: int,
    *,
    interface: str,
    method: str,
    args: list[tuple[str, object]],
    java_types: list[str] | None,
    version: str | None = None,
    group: str | None = None,
    attachments: dict[str, str] | None = None,
) -> bytes:
    """The frame of a two-way Dubbo 2 call. ``args`` are (argument name, parsed JSON value) in order;
    ``java_types`` their declared types (one each), or None for a generic call. Raises
    ``ArgumentError`` naming the argument that does not fit its type."""
    att = dict(attachments or {})
    att.setdefault("path", interface)
    att.setdefault("interface", interface)
    if version:
        att.setdefault("version", version)
    if group:
        att.setdefault("group", group)
    w = HessianWriter()
    if java_types is None:
        att["generic"] = "true"
        w.write(method).write(None).write(TypedList([untyped(v) for _, v in args], "[object"))
        name, descriptor = GENERIC_METHOD, GENERIC_DESCRIPTOR
    else:
        if len(java_types) != len(args):
            raise ValueError(f"dubbo call {interface}.{method}: {len(args)} arguments for {len(java_types)} types")
        for (arg, value), java_type in zip(args, java_types, strict=True):
            w.write(to_hessian(arg, java_type, value))
        name, descriptor = method, dubbo_descriptor(java_types)
    return frames.encode_request(
        request_id,
        interface,
        name,
        version=version or "",
        parameter_types=descriptor,
        args=w.getvalue(),
        attachments=att,
    )


def read_dubbo_response(frame: bytes) -> RpcResult:
    """The result in a whole Dubbo 2 response frame (header included). Raises ``HessianError`` (a
    ``ValueError``) when the body is not Hessian the reader understands."""
    header = frames.parse_header(frame)
    r = HessianReader(frame, frames.HEADER_LEN)
    if header.status != frames.STATUS_OK:
        message = ""
        if not r.at_end():
            text = r.read()
            if isinstance(text, int) and not r.at_end():  # @dubbo.ts writes a response flag first
                text = r.read()
            message = text if isinstance(text, str) else ""
        return RpcResult(
            header.status, exception=_STATUS_NAMES.get(header.status, f"Status{header.status}"), message=message
        )
    flag = r.read_int() % 3  # 3-5: the same with attachments after the value
    if flag == frames.RESPONSE_NULL_VALUE:
        return RpcResult(header.status)
    value = r.read()
    if flag != frames.RESPONSE_WITH_EXCEPTION:
        return RpcResult(header.status, value=value)
    if isinstance(value, JavaObject):
        detail = value.fields.get("detailMessage")
        return RpcResult(header.status, exception=value.class_name, message=detail if isinstance(detail, str) else "")
    return RpcResult(header.status, exception="java.lang.Throwable", message=str(value))
