"""A Bolt SofaRequest built from JSON arguments, and its SofaResponse read back as a result or an
exception.

Pure: values in, frame bytes out, and back. No sockets, no event loop, no logging. The content is
what SOFARPC's ``SofaHessianSerializer`` writes: the ``SofaRequest`` object (target service unique
name, method name, argument type names), then each argument as a value of its own, in Hessian 2.0;
the header map carries ``service`` and the ``sofa_head_*`` keys. A call without declared types is
SOFA's generic call as it reaches a provider: SOFARPC's consumer turns ``GenericService.$invoke(method,
types, args)`` into the named method with those types and arguments before it leaves
(``ConsumerGenericFilter``), marked by the header ``sofa_head_generic_type: 0`` (arguments in their
own classes) and ``generic.revise: true``; the types are each JSON value's natural Java class
(String, Integer or Long, Double, Boolean, Map, List, Object for null).
"""

from __future__ import annotations

from typing import Final

from sofamesh.core.hessian import HessianReader, JavaObject, TypedList, encode
from sofamesh.core.hessian import draft as hessian_draft
from sofamesh.plugins.filters.transcoder.java_json import to_hessian, untyped
from sofamesh.plugins.filters.transcoder.result import RpcResult
from sofamesh.plugins.protocols.bolt import frames

__all__ = ["GENERIC_TYPE_NORMAL", "SOFA_REQUEST_CLASS", "bolt_request", "generic_signature", "read_bolt_response"]

SOFA_REQUEST_CLASS: Final = "com.alipay.sofa.rpc.core.request.SofaRequest"
GENERIC_TYPE_NORMAL: Final = "0"  # SOFARPC's SERIALIZE_FACTORY_NORMAL: what $invoke sends
_STATUS_NAMES: Final[dict[int, str]] = {
    frames.STATUS_ERROR: "Error",
    frames.STATUS_SERVER_EXCEPTION: "ServerException",
    frames.STATUS_UNKNOWN: "Unknown",
    frames.STATUS_SERVER_THREADPOOL_BUSY: "ThreadPoolBusy",
    frames.STATUS_ERROR_COMM: "CommunicationError",
    frames.STATUS_NO_PROCESSOR: "NoProcessor",
    frames.STATUS_TIMEOUT: "Timeout",
}


_GENERIC_CLASSES: Final[tuple[tuple[type, str], ...]] = (
    (bool, "java.lang.Boolean"),  # before int: a bool is an int in Python
    (float, "java.lang.Double"),
    (str, "java.lang.String"),
    (list, "java.util.List"),
    (dict, "java.util.Map"),
)


def generic_signature(value: object) -> str:
    """The Java class a JSON value goes as in a generic call: the class ``untyped`` writes it in."""
    if value is None:
        return "java.lang.Object"
    for kind, java_class in _GENERIC_CLASSES:
        if isinstance(value, kind):
            return java_class
    if isinstance(value, int):
        return "java.lang.Integer" if -(2**31) <= value < 2**31 else "java.lang.Long"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def bolt_request(
    request_id: int,
    *,
    service: str,
    method: str,
    args: list[tuple[str, object]],
    java_types: list[str] | None,
    timeout_ms: int = 3000,
    app: str = "sofamesh-gateway",
    framing: frames.Framing = frames.V1_FRAMING,
    dialect: str = "hessian2",
) -> bytes:
    """The frame of a Bolt SofaRequest. ``service`` is the unique name (``interface:version``);
    ``args`` (argument name, parsed JSON value) in order; ``java_types`` their declared types, or None
    for a generic call. ``timeout_ms`` goes in the frame's header (-1: none). ``dialect`` is
    ``hessian2`` (SOFARPC Java) or ``draft`` (sofa-rpc-node).
    Raises ``ArgumentError`` naming the argument that does not fit its type."""
    props: list[tuple[str, str]] = []
    if java_types is None:
        values = [untyped(v) for _, v in args]
        sigs = [generic_signature(v) for _, v in args]
        props.append(("sofa_head_generic_type", GENERIC_TYPE_NORMAL))
    else:
        if len(java_types) != len(args):
            raise ValueError(f"bolt call {service}.{method}: {len(args)} arguments for {len(java_types)} types")
        values = [to_hessian(arg, t, v) for (arg, v), t in zip(args, java_types, strict=True)]
        sigs = java_types
    request = JavaObject(
        SOFA_REQUEST_CLASS,
        {
            "targetAppName": None,
            "methodName": method,
            "targetServiceUniqueName": service,
            "requestProps": None,
            "methodArgSigs": TypedList(list(sigs), "[string"),
        },
    )
    if dialect == "draft":  # sofa-rpc-node (sofa-hessian-node) reads only the draft encoding
        enc = hessian_draft.Encoder().write(request)
        for value in values:
            enc.write(value)
        content = enc.getvalue()
    elif dialect == "hessian2":
        content = encode(request, *values)
    else:
        raise ValueError(f"bolt call: unknown hessian dialect {dialect!r} (known: hessian2, draft)")
    header = frames.encode_header_map(
        [
            ("service", service),
            ("sofa_head_target_service", service),
            ("sofa_head_method_name", method),
            ("sofa_head_target_app", app),
            *props,
            ("type", "sync"),
            ("generic.revise", "true"),
        ]
    )
    return frames.encode_request(
        request_id,
        framing,
        timeout_ms=timeout_ms,
        class_name=SOFA_REQUEST_CLASS.encode(),
        header=header,
        content=content,
    )


def _content(frame: bytes) -> tuple[int, bytes]:
    proto = frame[0]
    layout = frames.V1_RESPONSE if proto == frames.PROTO_V1 else frames.V2_RESPONSE
    fields = layout.unpack_from(frame, 0)
    status, class_len, header_len, content_len = fields[-4:]
    start = layout.size + class_len + header_len
    return int(status), frame[start : start + content_len]


def read_bolt_response(frame: bytes) -> RpcResult:
    """The result in a whole Bolt response frame. The SofaResponse may be Hessian 2.0 (SOFARPC) or
    the draft encoding (sofa-rpc-node). Raises ``HessianError`` (a ``ValueError``) on bytes the
    readers do not understand."""
    status, content = _content(frame)
    response: object = None
    if content:
        response = HessianReader(content).read() if content[:1] == b"C" else hessian_draft.decode(content)
    if isinstance(response, JavaObject) and "detailMessage" in response.fields:  # the exception alone
        detail = response.fields.get("detailMessage")
        return RpcResult(status, exception=response.class_name, message=detail if isinstance(detail, str) else "")
    if isinstance(response, JavaObject):
        app = response.fields.get("appResponse")
        if response.fields.get("isError"):
            error = response.fields.get("errorMsg")
            return RpcResult(status, exception="SofaRpcException", message=error if isinstance(error, str) else "")
        if isinstance(app, JavaObject) and "detailMessage" in app.fields:
            detail = app.fields.get("detailMessage")
            return RpcResult(status, exception=app.class_name, message=detail if isinstance(detail, str) else "")
        if status == frames.STATUS_SUCCESS:
            return RpcResult(status, value=app)
    if status == frames.STATUS_SUCCESS:
        return RpcResult(status, value=response)
    return RpcResult(
        status,
        exception=_STATUS_NAMES.get(status, f"Status{status}"),
        message=response if isinstance(response, str) else "",
    )
