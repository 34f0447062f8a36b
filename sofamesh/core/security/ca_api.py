"""Istio's CSR API (``istio.v1.auth.IstioCertificateService``, istio/api
``security/v1alpha1/ca.proto``): its two messages, built at import from a descriptor written here,
so no generated module and no protoc step. Field numbers and types are Istio's:

- ``IstioCertificateRequest``: ``csr`` (1, PEM), ``validity_duration`` (3, seconds),
  ``metadata`` (4, ``google.protobuf.Struct``);
- ``IstioCertificateResponse``: ``cert_chain`` (1, PEM each, leaf first, root last),
  ``root_cert`` (2, ``Roots{ca_cert}``: every trusted root).

Also the metadata keys a sofamesh agent uses to renew with its current certificate instead of a
token (a signature over the CSR with the current key).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2
from google.protobuf.message_factory import GetMessageClass

SERVICE = "istio.v1.auth.IstioCertificateService"
METHOD = f"/{SERVICE}/CreateCertificate"

CERT_METADATA = "x-sofamesh-cert-bin"
"""gRPC metadata: the caller's current leaf certificate (DER), for a renewal without a token."""
SIGNATURE_METADATA = "x-sofamesh-csr-signature-bin"
"""gRPC metadata: the current key's signature (ECDSA/SHA-256, or Ed25519) over the request's ``csr``."""


def _file() -> descriptor_pb2.FileDescriptorProto:
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="istio/security/v1alpha1/ca.proto", package="istio.v1.auth",
                                           syntax="proto3", dependency=["google/protobuf/struct.proto"])
    req = f.message_type.add(name="IstioCertificateRequest")
    req.field.add(name="csr", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    req.field.add(name="validity_duration", number=3, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    req.field.add(name="metadata", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                  type_name=".google.protobuf.Struct")
    resp = f.message_type.add(name="IstioCertificateResponse")
    resp.field.add(name="cert_chain", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    resp.field.add(name="root_cert", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                   type_name=".istio.v1.auth.Roots")
    roots = f.message_type.add(name="Roots")
    roots.field.add(name="ca_cert", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    svc = f.service.add(name="IstioCertificateService")
    svc.method.add(name="CreateCertificate", input_type=".istio.v1.auth.IstioCertificateRequest",
                   output_type=".istio.v1.auth.IstioCertificateResponse")
    return f


def _messages() -> tuple[Any, Any]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("istio/security/v1alpha1/ca.proto")
    except KeyError:
        pool.FindFileByName(struct_pb2.DESCRIPTOR.name)
        pool.Add(_file())
    return (GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
            GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")))


IstioCertificateRequest, IstioCertificateResponse = _messages()

__all__ = ["CERT_METADATA", "METHOD", "SERVICE", "SIGNATURE_METADATA", "IstioCertificateRequest",
           "IstioCertificateResponse"]
