"""Aeraki's MetaRouter -> routes of the RPC egress listener (``rpc_proxy``, docs/xds.md), as Aeraki's
MetaProtocol proxy reads them.

A MetaRouter bound to a service (its ``hosts``) replaces that service's default routes with its
own, in order, first match wins; a call that matches none gets "no route", as in Aeraki. Each route:
- ``match.attributes``: ``interface`` / ``service`` match the RPC service, ``method``, ``version``,
  ``group`` their fields, any other key a header-map key (Bolt) or attachment (Dubbo); every route
  also matches the service itself, since one listener serves every service of its protocol;
- ``route``: one destination or weighted ones, a ``subset`` being the DestinationRule subset's
  cluster ``outbound|PORT|SUBSET|NAME`` (destinations nothing serves are left out, as for HTTP);
- ``mirror`` + ``mirrorPercentage`` (100 when absent): a copy of each call to that cluster,
  its answer discarded;
- ``requestMutation`` / ``responseMutation``: header-map keys / attachments set on the request /
  the response;
- the destination's DestinationRule ``consistentHash`` (RING_HASH / MAGLEV clusters): the route's
  ``hash_policy`` on that attribute (:func:`rpc_hash_policy`);
- ``retries`` (sofamesh's addition): the route's ``retry_policy`` (:func:`rpc_retry_policy`).

``localRateLimit`` becomes overrides of the listener's ``quota.local`` filter (:func:`rate_limits`):
each condition (in order) and then the service-wide ``tokenBucket`` a bucket of its own, matched on
the service and the condition's attributes, first match wins and a call matching none is not limited
(Aeraki's meta-protocol proxy). A bucket holds ``maxTokens`` and gains ``tokensPerFill`` (default 1)
per ``fillInterval``; the filter refills continuously at that rate where Aeraki adds the tokens at
each interval. Over the limit the caller gets its protocol's "rate limited" reply (Bolt
SERVER_THREADPOOL_BUSY, Dubbo status 40 ``rate limited``, as MOSN answers). Aeraki enforces the
limit on the provider's inbound listener (per provider instance); sofamesh on the caller's egress
listener (per calling sidecar).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sofamesh.pilot.policy.duration import parse_duration

if TYPE_CHECKING:
    from sofamesh.pilot.model import Service
    from sofamesh.pilot.policy.resource import Resource
    from sofamesh.pilot.xds.virtual_services import Destinations

_FIELDS = {"interface": "service", "service": "service", "method": "method", "version": "version", "group": "group"}


def _string_match(m: Mapping[str, Any]) -> dict[str, str]:
    for kind in ("exact", "prefix", "regex"):
        if kind in m:
            return {kind: str(m[kind])}
    return {"regex": ".*"}


def _match(service: Service, attributes: Mapping[str, Any]) -> dict[str, Any]:
    match: dict[str, Any] = {"service": {"exact": service.name}}
    headers: dict[str, Any] = {}
    for key, m in sorted(attributes.items()):
        field = _FIELDS.get(key)
        if field == "service":
            if _string_match(m) != {"exact": service.name}:
                headers[key] = _string_match(m)
        elif field is not None:
            match[field] = _string_match(m)
        else:
            headers[key] = _string_match(m)
    if headers:
        match["headers"] = headers
    return match


def rpc_routes(mr: Resource, service: Service, dests: Destinations, timeout_ms: int) -> list[dict[str, Any]]:
    """The ``rpc_proxy`` routes of ``mr`` for ``service``."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(mr.spec.get("routes") or []):
        if not isinstance(r, Mapping):
            continue
        route: dict[str, Any] = {"name": str(r.get("name") or f"{mr.namespace}.{mr.name}.{i}"),
                                 "match": _match(service, (r.get("match") or {}).get("attributes") or {}),
                                 "timeout_ms": timeout_ms}
        targets = []
        hashing: list[dict[str, Any]] = []
        for d in r.get("route") or []:
            resolved = dests.cluster(d.get("destination") or {})
            weight = int(d.get("weight", 0) or 0)
            if resolved is not None and (weight or len(r.get("route") or []) == 1):
                targets.append({"name": resolved[0], "weight": weight or 1})
                if len(targets) == 1:  # as for HTTP routes: the first destination's consistentHash
                    hashing = rpc_hash_policy(dests.hash_policy(d.get("destination") or {}, resolved))
        if not targets:
            route["direct_response"] = {"status": 503}
        elif len(targets) == 1:
            route["cluster"] = targets[0]["name"]
        else:
            route["weighted_clusters"] = targets
        if hashing:
            route["hash_policy"] = hashing
        retry = rpc_retry_policy(r.get("retries"))
        if retry is not None:
            route["retry_policy"] = retry
        if isinstance(r.get("mirror"), Mapping):
            resolved = dests.cluster(r["mirror"])
            pct = r.get("mirrorPercentage")
            if resolved is not None:
                route["mirror"] = [{"cluster": resolved[0], "percentage":
                                    float(pct.get("value", 0)) if isinstance(pct, Mapping) else 100.0}]
        for key, name in (("requestMutation", "request_headers"), ("responseMutation", "response_headers")):
            mutation = {str(kv["key"]): str(kv["value"]) for kv in r.get(key) or [] if isinstance(kv, Mapping)}
            if mutation:
                route[name] = {"set": mutation}
        out.append(route)
    return out


RPC_DEFAULT_RETRY_ON = "connect-failure,retriable"
"""What ``retries`` retries when it names no ``retryOn``: only what the provider cannot have run (a
failed connect, a reply its codec marks safe to send again, e.g. Bolt SERVER_THREADPOOL_BUSY), as
Istio's default HTTP conditions are the ones safe for any request. ``reset`` (the connection died
with the call in flight, e.g. a killed provider) is opt-in: the provider may have run the call, so
only an idempotent service should retry it (MOSN retries an RPC on connection failure and upstream
reset when its route's ``retry_on`` is set)."""


def rpc_retry_policy(retries: Any) -> dict[str, Any] | None:
    """A MetaRouter route's ``retries`` -> the proxy's ``retry_policy`` (``None``: no retries)."""
    if not isinstance(retries, Mapping):
        return None
    attempts = int(retries.get("attempts", 2))
    if attempts <= 0:
        return None
    on = [c.strip() for c in str(retries.get("retryOn") or RPC_DEFAULT_RETRY_ON).split(",") if c.strip()]
    policy: dict[str, Any] = {"retry_on": on, "num_retries": attempts}
    if retries.get("perTryTimeout"):
        policy["per_try_timeout_ms"] = int(parse_duration(str(retries["perTryTimeout"])) * 1000)
    if retries.get("backoff"):  # as a VirtualService's: Envoy's retry_back_off.base_interval
        policy["retry_back_off"] = {"base_interval_ms": max(1, round(parse_duration(str(retries["backoff"])) * 1000))}
    return policy


def rpc_hash_policy(policies: list[Any]) -> list[dict[str, Any]]:
    """A DestinationRule ``consistentHash`` (Envoy route hash policies) for an RPC route, as Aeraki maps
    it: ``httpHeaderName`` hashes that request attribute (a Bolt header-map key, a Dubbo attachment),
    ``useSourceIp`` the caller's address; a cookie or query parameter has no RPC meaning (none)."""
    out: list[dict[str, Any]] = []
    for hp in policies:
        kind = hp.WhichOneof("policy_specifier")
        if kind == "header":
            out.append({"header": {"header_name": hp.header.header_name}})
        elif kind == "connection_properties" and hp.connection_properties.source_ip:
            out.append({"connection_properties": {"source_ip": True}})
    return out


def token_bucket_limit(bucket: Mapping[str, Any]) -> dict[str, float]:
    """A token bucket (``maxTokens``, ``tokensPerFill``, ``fillInterval``) as ``quota.local``'s limit."""
    seconds = parse_duration(str(bucket.get("fillInterval")))
    return {"rate": float(bucket.get("tokensPerFill") or 1) / seconds, "burst": float(bucket.get("maxTokens") or 1)}


def rate_limits(mr: Resource, service: Service) -> list[dict[str, Any]]:
    """The ``quota.local`` overrides for ``mr``'s ``localRateLimit`` on ``service`` (none without one)."""
    lrl = mr.spec.get("localRateLimit")
    if not isinstance(lrl, Mapping):
        return []
    out = []
    for c in lrl.get("conditions") or []:
        if not isinstance(c, Mapping) or not isinstance(c.get("tokenBucket"), Mapping):
            continue
        m = _match(service, (c.get("match") or {}).get("attributes") or {})
        headers = m.pop("headers", {})
        if set(headers) & set(m):
            continue  # a service attribute other than the host's own service: never this service's calls
        out.append({"match": {**m, **headers}, "limit": token_bucket_limit(c["tokenBucket"])})
    if isinstance(lrl.get("tokenBucket"), Mapping):
        out.append({"match": {"service": {"exact": service.name}}, "limit": token_bucket_limit(lrl["tokenBucket"])})
    return out


def timeout_of(service: Service, default: int) -> int:
    try:
        return int(service.metadata.get("timeout_ms", default))
    except (TypeError, ValueError):
        return default


__all__ = ["RPC_DEFAULT_RETRY_ON", "rate_limits", "rpc_hash_policy", "rpc_retry_policy", "rpc_routes", "timeout_of",
           "token_bucket_limit"]
