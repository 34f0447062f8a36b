"""security.istio.io (v1, v1beta1): AuthorizationPolicy, PeerAuthentication, RequestAuthentication.
Their CRD schemas and the rules of Istio's validating webhook. No I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sofamesh.pilot.policy import webhook as w
from sofamesh.pilot.policy.schema import Bool, Duration, Enum, ListOf, MapOf, Obj, Report, Str, child, entry

STRS = ListOf(Str())
SELECTOR = Obj({"matchLabels": MapOf(Str())})
TARGET_REF = Obj({"group": Str(), "kind": Str(), "name": Str(), "namespace": Str()}, required=["kind", "name"])
SOURCE = Obj({k: STRS for k in (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
    "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")})
OPERATION = Obj({k: STRS for k in ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths",
                                    "notPaths")})
AUTHORIZATION_POLICY = Obj({
    "selector": SELECTOR, "targetRef": TARGET_REF, "targetRefs": ListOf(TARGET_REF),
    "rules": ListOf(Obj({
        "from": ListOf(Obj({"source": SOURCE})), "to": ListOf(Obj({"operation": OPERATION})),
        "when": ListOf(Obj({"key": Str(), "values": STRS, "notValues": STRS}, required=["key"])),
    })),
    "action": Enum("ALLOW", "DENY", "AUDIT", "CUSTOM"), "provider": Obj({"name": Str()}),
})
_MTLS = Obj({"mode": Enum("UNSET", "DISABLE", "PERMISSIVE", "STRICT")})
PEER_AUTHENTICATION = Obj({"selector": SELECTOR, "mtls": _MTLS, "portLevelMtls": MapOf(_MTLS)})
REQUEST_AUTHENTICATION = Obj({
    "selector": SELECTOR, "targetRef": TARGET_REF, "targetRefs": ListOf(TARGET_REF),
    "jwtRules": ListOf(Obj({
        "issuer": Str(), "audiences": STRS, "jwksUri": Str(), "jwks": Str(),
        "fromHeaders": ListOf(Obj({"name": Str(), "prefix": Str()}, required=["name"])),
        "fromParams": STRS, "outputPayloadToHeader": Str(), "forwardOriginalToken": Bool(),
        "outputClaimToHeaders": ListOf(Obj({"header": Str(), "claim": Str()})), "fromCookies": STRS,
        "timeout": Duration(),
    })),
})

_TARGET_KINDS = {("", "Service"), ("core", "Service"), ("networking.istio.io", "ServiceEntry"),
                 ("gateway.networking.k8s.io", "Gateway"), ("gateway.networking.k8s.io", "GatewayClass")}
_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
         "request.auth.principal", "request.auth.audiences", "request.auth.presenter", "destination.ip",
         "destination.port", "connection.sni")
_BRACKETED = re.compile(r"(request\.headers|request\.auth\.claims)\[[^\]]+\](\[[^\]]+\])*")


def _check_selectors(spec: Mapping[str, Any], report: Report) -> None:
    set_ = [k for k in ("selector", "targetRef", "targetRefs") if spec.get(k)]
    if len(set_) > 1:
        report.error("spec", "only one of targetRefs or workloadSelector can be set")
    sel = spec.get("selector")
    if isinstance(sel, Mapping):
        w.check_selector(sel.get("matchLabels", {}), "spec.selector.matchLabels", report)
    refs = [("spec.targetRef", spec.get("targetRef"))] + [
        (child("spec.targetRefs", i), r) for i, r in enumerate(spec.get("targetRefs") or [])]
    for path, ref in refs:
        if not isinstance(ref, Mapping):
            continue
        if ref.get("namespace"):
            report.error(child(path, "namespace"), "targetRef namespace must not be set; cross namespace "
                                                   "referencing is not supported")
        if (ref.get("group", ""), ref.get("kind")) not in _TARGET_KINDS:
            report.error(path, f"targetRef must be to a Service, ServiceEntry, Gateway or GatewayClass but was "
                               f"{ref.get('group', '')}/{ref.get('kind')}")


def _check_attribute(key: str, values: list[Any], path: str, report: Report) -> None:
    if key in _KEYS or _BRACKETED.fullmatch(key) or key.startswith("experimental.envoy.filters."):
        if key in ("source.ip", "remote.ip", "destination.ip"):
            for i, v in enumerate(values):
                w.check_ip_or_cidr(v, child(path, i), report)
        elif key == "destination.port":
            for i, v in enumerate(values):
                if not (isinstance(v, str) and v.isdigit() and 0 < int(v) <= 65535):
                    report.error(child(path, i), f"invalid port {v!r}")
        return
    report.error(path, f"unknown attribute ({key})")


def check_authorization_policy(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    _check_selectors(spec, report)
    action = spec.get("action", "ALLOW")
    rules = spec.get("rules")
    if action == "CUSTOM":
        if rules is None:
            report.error("spec.rules", "CUSTOM action without `rules` is meaningless as it will never be triggered, "
                                       "add an empty rule `{}` if you want it be triggered for every request")
        elif not (spec.get("provider") or {}).get("name"):
            report.error("spec.provider.name", "`provider.name` must not be empty")
    elif spec.get("provider") is not None:
        report.error("spec.provider", f"`provider` must not be with non CUSTOM action, found {action}")
    if action == "DENY" and rules is None:
        report.error("spec.rules", "DENY action without `rules` is meaningless as it will never be triggered, "
                                   "add an empty rule `{}` if you want it be triggered for every request")
    for i, rule in enumerate(rules or []):
        p = child("spec.rules", i)
        if not isinstance(rule, Mapping):
            continue
        if "from" in rule and not rule["from"]:
            report.error(child(p, "from"), f"`from` must not be empty, found at rule {i}")
        for j, f in enumerate(rule.get("from") or []):
            fp = child(child(p, "from"), j)
            src = f.get("source") if isinstance(f, Mapping) else None
            if not isinstance(src, Mapping):
                report.error(child(fp, "source"), f"`from.source` must not be nil, found at rule {i}")
                continue
            if not any(src.get(k) for k in SOURCE.fields):
                report.error(child(fp, "source"), f"`from.source` must not be empty, found at rule {i}")
            if any(src.get(k) for k in ("principals", "notPrincipals", "namespaces", "notNamespaces")) and any(
                    src.get(k) for k in ("serviceAccounts", "notServiceAccounts")):
                report.error(child(fp, "source"), f"cannot set serviceAccounts with namespaces or principals, "
                                                  f"found at rule {i}")
            if action == "CUSTOM":
                for k in ("namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "principals",
                          "notPrincipals", "requestPrincipals", "notRequestPrincipals"):
                    if src.get(k):
                        report.error(child(child(fp, "source"), k),
                                     f"From.{k[0].upper()}{k[1:]} is currently not supported with CUSTOM action")
            for k, values in src.items():
                if isinstance(values, list):
                    w.non_empty(values, child(child(fp, "source"), k), report, k)
                    if "IpBlocks" in k or k == "ipBlocks":
                        for n, v in enumerate(values):
                            w.check_ip_or_cidr(v, child(child(child(fp, "source"), k), n), report)
        if "to" in rule and not rule["to"]:
            report.error(child(p, "to"), f"`to` must not be empty, found at rule {i}")
        for j, t in enumerate(rule.get("to") or []):
            tp = child(child(p, "to"), j)
            op = t.get("operation") if isinstance(t, Mapping) else None
            if not isinstance(op, Mapping):
                report.error(child(tp, "operation"), f"`to.operation` must not be nil, found at rule {i}")
                continue
            if not any(op.get(k) for k in OPERATION.fields):
                report.error(child(tp, "operation"), f"`to.operation` must not be empty, found at rule {i}")
            for k, values in op.items():
                if not isinstance(values, list):
                    continue
                w.non_empty(values, child(child(tp, "operation"), k), report, k)
                if k in ("ports", "notPorts"):
                    for n, v in enumerate(values):
                        if isinstance(v, str) and v and not (v.isdigit() and 0 < int(v) <= 65535):
                            report.error(child(child(child(tp, "operation"), k), n), f"invalid port {v!r}")
        for j, cond in enumerate(rule.get("when") or []):
            cp = child(child(p, "when"), j)
            if not isinstance(cond, Mapping):
                continue
            key = cond.get("key")
            if key == "":
                report.error(child(cp, "key"), "`key` must not be empty")
                continue
            if not isinstance(key, str):
                continue
            if not cond.get("values") and not cond.get("notValues"):
                report.error(cp, f"at least one of `values` or `notValues` must be set for key {key}")
            if action == "CUSTOM" and (key in ("source.namespace", "source.serviceAccount", "source.principal")
                                       or key.startswith("request.auth.")):
                report.error(child(cp, "key"), f"{key} is currently not supported with CUSTOM action")
            for field in ("values", "notValues"):
                if cond.get(field):
                    _check_attribute(key, cond[field], child(cp, field), report)


def check_peer_authentication(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    sel = spec.get("selector")
    empty = not isinstance(sel, Mapping) or not sel.get("matchLabels")
    plm = spec.get("portLevelMtls")
    if empty and plm:
        report.error("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS")
    if plm is not None and not plm:
        report.error("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element")
    if isinstance(plm, Mapping):
        for port in plm:
            if not (str(port).isdigit() and 0 < int(port) <= 65535):
                report.error(entry("spec.portLevelMtls", str(port)), "port must be in range 1..65535")
    if isinstance(sel, Mapping):
        w.check_selector(sel.get("matchLabels", {}), "spec.selector.matchLabels", report)


def _check_jwks_uri(uri: str, path: str, report: Report) -> None:
    try:
        parts = urlsplit(uri)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number, or out of range
    except ValueError as exc:  # "Invalid IPv6 URL", a bad port
        report.error(path, f"jwksUri {uri!r} is not a URL: {exc}")
        return
    if not ok:
        report.error(path, f"jwksUri {uri!r} must be an http or https URL with a host")


def check_request_authentication(namespace: str, spec: Mapping[str, Any], report: Report) -> None:
    _check_selectors(spec, report)
    for i, rule in enumerate(spec.get("jwtRules") or []):
        if not isinstance(rule, Mapping):
            continue
        p = child("spec.jwtRules", i)
        for j, aud in enumerate(rule.get("audiences") or []):
            if aud == "":
                report.error(child(child(p, "audiences"), j), "audience must be non-empty string")
        if not rule.get("issuer") and not rule.get("jwksUri"):
            report.error(child(p, "issuer"), "issuer or jwksUri must be non-empty string")
        if isinstance(rule.get("jwksUri"), str) and rule["jwksUri"]:
            _check_jwks_uri(rule["jwksUri"], child(p, "jwksUri"), report)
        jwks = rule.get("jwks")
        if isinstance(jwks, str) and jwks:
            try:
                doc = json.loads(jwks)
                if not isinstance(doc, Mapping) or not isinstance(doc.get("keys", doc.get("kty")), list | str):
                    raise ValueError("not a JWK or JWK set")
            except ValueError as exc:
                report.error(child(p, "jwks"), f"jwks parse error: {exc}")
        for j, h in enumerate(rule.get("fromHeaders") or []):
            if isinstance(h, Mapping) and h.get("name") == "":
                report.error(child(child(child(p, "fromHeaders"), j), "name"),
                             "location header name must be non-empty string")
        for field, what in (("fromParams", "location query must be non-empty string"),
                            ("fromCookies", "cookie name must be non-empty string")):
            for j, v in enumerate(rule.get(field) or []):
                if v == "":
                    report.error(child(child(p, field), j), what)
        for j, oc in enumerate(rule.get("outputClaimToHeaders") or []):
            if not isinstance(oc, Mapping):
                continue
            op = child(child(p, "outputClaimToHeaders"), j)
            if not oc.get("claim") or not oc.get("header"):
                report.error(op, "outputClaimToHeaders header and claim value must be non-empty string")
            elif isinstance(oc["header"], str):
                w.check_header_name(oc["header"], child(op, "header"), report, strict=True)
        w.check_duration_value(rule.get("timeout"), child(p, "timeout"), report)
    issuers = [str(r["issuer"]) for r in spec.get("jwtRules") or [] if isinstance(r, Mapping) and r.get("issuer")]
    for dup in sorted({i for i in issuers if issuers.count(i) > 1}):
        report.warn("spec.jwtRules", f"issuer {dup!r} appears in more than one jwtRule")


__all__ = [
    "AUTHORIZATION_POLICY",
    "PEER_AUTHENTICATION",
    "REQUEST_AUTHENTICATION",
    "check_authorization_policy",
    "check_peer_authentication",
    "check_request_authentication",
]
