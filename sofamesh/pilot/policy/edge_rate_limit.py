"""The Gateway annotation ``sofamesh.io/local-rate-limit``: a local rate limit at the edge.

Istio has no field for it (its documented way is an EnvoyFilter inserting Envoy's
``envoy.filters.http.local_ratelimit`` into the ingress gateway); sofamesh reads an annotation on the
Gateway instead (as the ``sofamesh.io/transcoders`` annotation on a VirtualService), a YAML or JSON
mapping holding one token bucket in the MetaRouter's ``localRateLimit`` shape (which is Envoy's
``token_bucket``)::

    metadata:
      annotations:
        sofamesh.io/local-rate-limit: '{tokenBucket: {maxTokens: 100, tokensPerFill: 10, fillInterval: 1s}}'

Every HTTP connection manager the Gateway's servers get on a gateway node takes requests from that
bucket; over it a request is answered 429. Admission checks the shape. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sofamesh.pilot.policy.annotations import annotation_document, parse_annotation
from sofamesh.pilot.policy.metaprotocol import TOKEN_BUCKET, check_token_bucket
from sofamesh.pilot.policy.schema import Obj, Report

__all__ = ["ANNOTATION", "check_edge_rate_limit", "token_bucket_of"]

ANNOTATION: Final = "sofamesh.io/local-rate-limit"
_SHAPE = Obj({"tokenBucket": TOKEN_BUCKET}, required=["tokenBucket"])


def check_edge_rate_limit(annotations: Mapping[str, Any], report: Report) -> None:
    """Errors of the annotation (when present) at ``metadata.annotations[sofamesh.io/local-rate-limit]``."""
    got = annotation_document(annotations, ANNOTATION, report)
    if got is None:
        return
    where, doc = got
    before = len(report.errors)
    _SHAPE.check(doc, where, report)
    if len(report.errors) == before:
        check_token_bucket(doc["tokenBucket"], f"{where}.tokenBucket", report)


def token_bucket_of(annotations: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The annotation's token bucket, ``None`` without one (or when admission would refuse it)."""
    if annotations.get(ANNOTATION) is None:
        return None
    report = Report()
    check_edge_rate_limit(annotations, report)
    doc = parse_annotation(annotations, ANNOTATION)
    return doc["tokenBucket"] if not report.errors and isinstance(doc, Mapping) else None
