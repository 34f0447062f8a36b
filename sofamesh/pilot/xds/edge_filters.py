"""The authn, authz, quota and telemetry filters of a gateway's HTTP connection managers: the
security policy a sidecar's inbound listener enforces, at the edge.

- RequestAuthentication and AuthorizationPolicy apply to a gateway node as to a workload (Istio's
  rule, :func:`.workload_security.applies`): the node's namespace (metadata ``NAMESPACE``) and its
  labels (``LABELS``) against ``selector.matchLabels``; root-namespace ones without a selector apply
  to every gateway. PeerAuthentication does not (a gateway's downstream TLS is its servers'). The
  filters are the inbound listener's (:mod:`.security_filters`): a request without a token passes
  the JWT filter, one with a bad token gets 401, an AuthorizationPolicy refusing it 403; an
  operation's ``ports`` and ``destination.port`` are the server's port.
- Quota: the ``sofamesh.io/local-rate-limit`` annotation of the Gateways serving the port
  (:mod:`..policy.edge_rate_limit`; the first that has one), as ``quota.local`` with one shared
  bucket for a sofamesh proxy and as Envoy's ``envoy.filters.http.local_ratelimit`` for an Envoy
  (429 once the bucket is empty; one bucket per filter chain).
- Telemetry: a sofamesh gateway also gets the ``telemetry`` filter as the reporting source
  (Istio's gateways report ``reporter="source"``), so ``istio_requests_total`` and its histograms
  count the gateway's requests on the admin's ``/stats/prometheus``; an Envoy counts them in its
  HTTP connection manager stats (``http.<stat_prefix>.downstream_rq_*``), as do both proxies'
  listener stats.
Order, as Istio's: JWT, RBAC, then (in the HCM that appends them) CORS and fault, then the rate
limit and telemetry, then the router.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from sofamesh.pilot.policy.duration import parse_duration
from sofamesh.pilot.policy.edge_rate_limit import token_bucket_of
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE
from sofamesh.pilot.xds.meta_routers import token_bucket_limit
from sofamesh.pilot.xds.security_filters import kernel_http_filters, security_http_filters
from sofamesh.pilot.xds.workload_security import Workload, inbound_filters, jwt_config, rbac_config

if TYPE_CHECKING:
    from sofamesh.pilot.policy.resource import Resource
    from sofamesh.pilot.xds.envoy_jwt import JwksFor
    from sofamesh.pilot.xds.generator import NodeInfo

EdgeFilters = tuple[list[hcm_pb2.HttpFilter], list[hcm_pb2.HttpFilter]]
"""The HTTP filters of a gateway HCM before CORS and fault, and after them (before the router)."""

_LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
WORKLOAD_NAME_KEY = "WORKLOAD_NAME"  # Istio's node metadata key


def gateway_workload(node: NodeInfo) -> Workload:
    """A gateway node as the workload security policy selects: its namespace and labels."""
    raw = node.metadata.get("LABELS")
    labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    return Workload(str(node.metadata.get("NAMESPACE") or DEFAULT_NAMESPACE), labels, frozenset())


def workload_name(node: NodeInfo) -> str:
    """``WORKLOAD_NAME``, else the pod name of an Istio node id ``TYPE~IP~POD.NAMESPACE~DOMAIN``."""
    name = node.metadata.get(WORKLOAD_NAME_KEY)
    if name:
        return str(name)
    parts = node.id.split("~")
    return parts[2].partition(".")[0] if len(parts) > 2 and parts[2] else "unknown"


def _envoy_rate_limit(bucket: Mapping[str, Any], stat_prefix: str) -> hcm_pb2.HttpFilter:
    full = base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED),
        runtime_key=f"{stat_prefix}.local_rate_limit_enabled",
    )
    interval = duration_pb2.Duration()
    interval.FromMilliseconds(round(parse_duration(str(bucket.get("fillInterval"))) * 1000))
    config = local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=f"{stat_prefix}_local_rate_limit",
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=int(bucket.get("maxTokens") or 1),
            tokens_per_fill=wrappers_pb2.UInt32Value(value=int(bucket.get("tokensPerFill") or 1)),
            fill_interval=interval,
        ),
        filter_enabled=full,
        filter_enforced=full,
    )
    a = any_pb2.Any()
    a.Pack(config)
    return hcm_pb2.HttpFilter(name=_LOCAL_RATELIMIT, typed_config=a)


def edge_http_filters(
    node: NodeInfo,
    sofamesh: bool,
    port: int,
    gateways: Iterable[Resource],
    request_authentications: Iterable[Resource],
    authorization_policies: Iterable[Resource],
    trust_domain: str,
    jwks_for: JwksFor | None,
) -> EdgeFilters:
    """The filters for an HCM of ``port`` of a gateway node, as (before CORS and fault, after them)."""
    w = gateway_workload(node)
    jwt = jwt_config(request_authentications, w)
    rbac = rbac_config(authorization_policies, w, port)
    before = security_http_filters(sofamesh, inbound_filters("DISABLE", jwt, rbac, trust_domain), jwt, rbac, jwks_for)
    bucket = next((b for b in (token_bucket_of(g.annotations) for g in gateways) if b is not None), None)
    kernel: list[dict[str, Any]] = []
    after: list[hcm_pb2.HttpFilter] = []
    if bucket is not None:
        if sofamesh:
            limit = token_bucket_limit(bucket)
            kernel.append(
                {"type": "quota.local", "config": {"limit": {"rate": limit["rate"], "burst": int(limit["burst"])}}}
            )
        else:
            after.append(_envoy_rate_limit(bucket, f"gateway_{port}"))
    if sofamesh:
        kernel.append({"type": "telemetry", "config": {"reporter": "source", "workload": workload_name(node)}})
        after = kernel_http_filters(kernel)
    return before, after


__all__ = ["WORKLOAD_NAME_KEY", "EdgeFilters", "edge_http_filters", "gateway_workload", "workload_name"]
