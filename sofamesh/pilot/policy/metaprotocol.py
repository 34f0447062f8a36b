"""metaprotocol.aeraki.io/v1alpha1 MetaRouter: routes for RPC protocols (Dubbo, Bolt, Thrift, any
protocol plugin) matched on request attributes. The schema follows Aeraki's proto; the rules are
Istio's for the shapes MetaRouter shares with a VirtualService (destinations, weights, string
matches, percentages, exportTo). No I/O.

``routes[].retries`` is sofamesh's addition (Aeraki's MetaRouter has none): the shape of a
VirtualService's HTTPRetry (``attempts``, ``perTryTimeout``, ``retryOn``, ``backoff``) with the
conditions that mean something to RPC, retried as MOSN retries an RPC (docs/policy.md, "RPC retries").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sofamesh.pilot.policy import webhook as w
from sofamesh.pilot.policy.networking import DESTINATION, PERCENT, STRING_MATCH, STRS
from sofamesh.pilot.policy.schema import Bool, Duration, Int, ListOf, MapOf, Obj, Report, Str, UInt32, child, entry

META_MATCH = Obj({"attributes": MapOf(STRING_MATCH)})
KEY_VALUE = Obj({"key": Str(), "value": Str()}, required=["key", "value"])
RPC_RETRY_ON = ("connect-failure", "reset", "retriable", "5xx", "gateway-error")
"""The proxy's ``retry_on`` conditions an RPC call can meet (docs/configuration.md, "Retries")."""
RPC_RETRY = Obj({"attempts": Int(), "perTryTimeout": Duration(), "retryOn": Str(), "backoff": Duration()})
TOKEN_BUCKET = Obj({"maxTokens": UInt32(), "tokensPerFill": UInt32(), "fillInterval": Duration()},
                   required=["fillInterval"])
META_ROUTER = Obj({
    "hosts": STRS, "gateways": STRS,
    "routes": ListOf(Obj({
        "name": Str(), "match": META_MATCH,
        "route": ListOf(Obj({"destination": DESTINATION, "weight": UInt32()}, required=["destination"])),
        "mirror": DESTINATION, "mirrorPercentage": PERCENT, "requestMutation": ListOf(KEY_VALUE),
        "responseMutation": ListOf(KEY_VALUE), "retries": RPC_RETRY,
    })),
    "localRateLimit": Obj({"tokenBucket": TOKEN_BUCKET,
                           "conditions": ListOf(Obj({"match": META_MATCH, "tokenBucket": TOKEN_BUCKET},
                                                    required=["match", "tokenBucket"]))}),
    "globalRateLimit": Obj({
        "match": META_MATCH, "domain": Str(), "requestTimeout": Duration(), "denyOnFail": Bool(),
        "rateLimitService": Str(),
        "descriptors": ListOf(Obj({"property": Str(), "descriptorKey": Str()}, required=["property", "descriptorKey"])),
    }, required=["match", "domain", "rateLimitService", "descriptors"]),
    "exportTo": STRS,
})


def _check_match(m: Any, path: str, report: Report) -> None:
    if isinstance(m, Mapping) and isinstance(m.get("attributes"), Mapping):
        for name, sm in m["attributes"].items():
            p = entry(child(path, "attributes"), str(name))
            if name == "":
                report.error(p, "attribute name cannot be empty")
            w.check_string_match(sm, p, report)


def check_token_bucket(b: Any, path: str, report: Report) -> None:
    if not isinstance(b, Mapping):
        return
    if not b.get("maxTokens"):
        report.error(child(path, "maxTokens"), "maxTokens must be greater than 0")
    if b.get("tokensPerFill") == 0:
        report.error(child(path, "tokensPerFill"), "tokensPerFill must be greater than 0")
    # Aeraki's meta-protocol proxy refuses a fill timer under 50 ms
    w.check_duration_value(b.get("fillInterval"), child(path, "fillInterval"), report, minimum=0.05)


def _check_retries(r: Any, path: str, report: Report) -> None:
    if not isinstance(r, Mapping):
        return
    attempts = r.get("attempts", 0)
    if isinstance(attempts, int) and attempts < 0:
        report.error(child(path, "attempts"), "attempts cannot be negative")
    if attempts == 0 and any(r.get(k) is not None for k in ("perTryTimeout", "retryOn")):
        report.error(path, "retry policy configured when attempts are set to 0 (disabled)")
    w.check_duration_value(r.get("perTryTimeout"), child(path, "perTryTimeout"), report)
    w.check_duration_value(r.get("backoff"), child(path, "backoff"), report)  # Istio: at least 1 ms
    retry_on = r.get("retryOn")
    if isinstance(retry_on, str):
        for cond in (c.strip() for c in retry_on.split(",")):
            if cond not in RPC_RETRY_ON:
                report.error(child(path, "retryOn"),
                             f"{cond!r} is not a retryOn condition for RPC (known: {', '.join(RPC_RETRY_ON)})")


def check_meta_router(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    hosts = spec.get("hosts") or []
    if not hosts:
        report.error("spec.hosts", "MetaRouter must have at least one host")
    elif len(hosts) > 1:
        report.warn("spec.hosts", "only the first host of a MetaRouter takes effect (as in Aeraki)")
    for i, h in enumerate(hosts):
        w.check_host(h, child("spec.hosts", i), report, allow_star=False, allow_ip=False)
    w.check_gateway_names(spec.get("gateways"), "spec.gateways", report)
    for i, r in enumerate(spec.get("routes") or []):
        if not isinstance(r, Mapping):
            continue
        p = child("spec.routes", i)
        _check_match(r.get("match"), child(p, "match"), report)
        routes = r.get("route") or []
        if not routes:
            report.error(child(p, "route"), "route is required")
        for j, d in enumerate(routes):
            if isinstance(d, Mapping):
                w.check_destination(d.get("destination"), child(child(child(p, "route"), j), "destination"), report)
        w.check_weighted(routes, child(p, "route"), report)
        w.check_destination(r.get("mirror"), child(p, "mirror"), report)
        mp = r.get("mirrorPercentage")
        if mp is not None and r.get("mirror") is None:
            report.error(child(p, "mirrorPercentage"), "mirrorPercentage without mirror")
        w.check_percentage(mp, child(p, "mirrorPercentage"), report)
        _check_retries(r.get("retries"), child(p, "retries"), report)
        for field in ("requestMutation", "responseMutation"):
            for j, kv in enumerate(r.get(field) or []):
                if isinstance(kv, Mapping) and kv.get("key") == "":
                    report.error(child(child(child(p, field), j), "key"), "key must be non-empty")
    lrl = spec.get("localRateLimit")
    if isinstance(lrl, Mapping):
        if lrl.get("tokenBucket") is None and not lrl.get("conditions"):
            report.error("spec.localRateLimit", "at least one of tokenBucket or conditions should have value")
        check_token_bucket(lrl.get("tokenBucket"), "spec.localRateLimit.tokenBucket", report)
        for i, c in enumerate(lrl.get("conditions") or []):
            if isinstance(c, Mapping):
                p = child("spec.localRateLimit.conditions", i)
                _check_match(c.get("match"), child(p, "match"), report)
                check_token_bucket(c.get("tokenBucket"), child(p, "tokenBucket"), report)
    grl = spec.get("globalRateLimit")
    if isinstance(grl, Mapping):
        _check_match(grl.get("match"), "spec.globalRateLimit.match", report)
        w.check_duration_value(grl.get("requestTimeout"), "spec.globalRateLimit.requestTimeout", report)
    w.check_export_to(namespace, spec.get("exportTo"), "spec.exportTo", report)


__all__ = ["META_ROUTER", "RPC_RETRY_ON", "TOKEN_BUCKET", "check_meta_router", "check_token_bucket"]
