"""Nacos 2's gRPC envelope: ``Payload {Metadata metadata = 2; google.protobuf.Any body = 3}`` with
``Metadata {string type = 3; map<string, string> headers = 7; string clientIp = 8}``, the message
of both ``/Request/request`` (unary) and ``/BiRequestStream/requestBiStream`` (bidirectional).

``metadata.type`` names the request or response class (``InstanceRequest``, ``ErrorResponse``...),
and ``body.value`` is that object as JSON (``body.type_url`` stays empty, as Nacos sends it). The
messages are built here from their descriptors (no generated code): field numbers and names are
those of Nacos's ``nacos_grpc_service.proto``, so the bytes are what Nacos clients send and expect.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

REQUEST_SERVICE = "Request"
REQUEST_METHOD = "request"
BI_STREAM_SERVICE = "BiRequestStream"
BI_STREAM_METHOD = "requestBiStream"


def _payload_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(
        name="sofamesh/nacos_grpc_payload.proto", syntax="proto3", dependency=["google/protobuf/any.proto"]
    )
    optional, repeated = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    string, message = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    meta = fd.message_type.add(name="Metadata")
    meta.field.add(name="type", number=3, label=optional, type=string)
    meta.field.add(name="headers", number=7, label=repeated, type=message, type_name=".Metadata.HeadersEntry")
    meta.field.add(name="clientIp", number=8, label=optional, type=string)
    entry = meta.nested_type.add(name="HeadersEntry")
    entry.field.add(name="key", number=1, label=optional, type=string)
    entry.field.add(name="value", number=2, label=optional, type=string)
    entry.options.map_entry = True
    payload = fd.message_type.add(name="Payload")
    payload.field.add(name="metadata", number=2, label=optional, type=message, type_name=".Metadata")
    payload.field.add(name="body", number=3, label=optional, type=message, type_name=".google.protobuf.Any")
    pool.Add(fd)
    return GetMessageClass(pool.FindMessageTypeByName("Payload"))


Payload = _payload_class()


class BadPayload(ValueError):
    """The bytes are no ``Payload`` (answered as gRPC-Java does: status INTERNAL)."""


def decode(raw: bytes) -> tuple[str, bytes, dict[str, str]]:
    """A ``Payload`` -> (``metadata.type``, the JSON body's bytes, ``metadata.headers``)."""
    msg = Payload()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise BadPayload(f"Invalid protobuf byte sequence: {exc}") from None
    return msg.metadata.type, msg.body.value, dict(msg.metadata.headers)


def body_of(value: bytes) -> dict[str, Any]:
    """The JSON object of a body; ``ValueError`` naming what is wrong."""
    data = json.loads(value.decode("utf-8")) if value else None
    if not isinstance(data, dict):
        raise ValueError(f"the body is not a JSON object: {value[:80]!r}")
    return data


def encode(kind: str, body: dict[str, Any], client_ip: str = "", headers: dict[str, str] | None = None) -> bytes:
    """A ``Payload`` of type ``kind`` carrying ``body`` as JSON."""
    msg = Payload()
    msg.metadata.type = kind
    if client_ip:
        msg.metadata.clientIp = client_ip
    if headers:
        msg.metadata.headers.update(headers)
    msg.body.value = json.dumps(body, separators=(",", ":")).encode()
    return bytes(msg.SerializeToString())


def response(request_id: str = "", **fields: Any) -> dict[str, Any]:
    """The fields every Nacos ``Response`` carries (success), plus ``fields``."""
    return {"resultCode": 200, "errorCode": 0, "message": "", "requestId": request_id, "success": True, **fields}


def error(code: int, message: str, request_id: str = "") -> dict[str, Any]:
    """An ``ErrorResponse``: ``resultCode`` 500 (Nacos's ``ResponseCode.FAIL``) and ``errorCode``."""
    return {"resultCode": 500, "errorCode": code, "message": message, "requestId": request_id, "success": False}


__all__ = [
    "BI_STREAM_METHOD",
    "BI_STREAM_SERVICE",
    "REQUEST_METHOD",
    "REQUEST_SERVICE",
    "BadPayload",
    "Payload",
    "body_of",
    "decode",
    "encode",
    "error",
    "response",
]
