"""The ``authz.rbac`` config Pilot builds from AuthorizationPolicy, as Envoy's RBAC HTTP filters
(what istiod sends an Envoy sidecar): a DENY filter, then an ALLOW filter, and dry-run policies
(AUDIT, ``istio.io/dry-run``) as shadow rules. Values keep Istio's matching: ``abc`` exact,
``abc*`` prefix, ``*abc`` suffix, ``*`` any non-empty value. Principals are the peer certificate's
URI SAN (``spiffe://`` + the value).

``requestPrincipals`` and ``request.auth.*`` conditions match the payload Envoy's JWT filter verified
(:mod:`sofamesh.pilot.xds.envoy_jwt`) when a RequestAuthentication applies; without one no request
has a request principal: an ALLOW rule using them never matches, a DENY rule leaves them out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2, wrappers_pb2

from sofamesh.pilot.xds.envoy_jwt import claim, claim_path, request_principal

_FILTER = "envoy.filters.http.rbac"
_JWT_ONLY = ("requestPrincipals", "notRequestPrincipals")


class _Unsupported(Exception):
    pass


def _string(value: str, prefix: str = "") -> string_pb2.StringMatcher:
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1])
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    return string_pb2.StringMatcher(exact=prefix + value)


def _header(name: str, value: str) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(name=name, string_match=_string(value))


def _cidr(value: str) -> address_pb2.CidrRange:
    ip, _, length = value.partition("/")
    bits = int(length) if length else (128 if ":" in ip else 32)
    return address_pb2.CidrRange(address_prefix=ip, prefix_len=wrappers_pb2.UInt32Value(value=bits))


def _principal_of(field: str, value: str, issuers: tuple[str, ...] | None) -> rbac.Principal:
    if field in ("requestPrincipals", "request.auth.principal") and issuers is not None:
        return request_principal(value, issuers)
    if field.startswith("request.auth.") and issuers is not None:
        path = claim_path(field)
        if path is None:
            raise _Unsupported(field)
        return claim(path, value)
    if field in ("principals", "source.principal"):
        return rbac.Principal(authenticated=rbac.Principal.Authenticated(principal_name=_string(value, "spiffe://")))
    if field in ("namespaces", "source.namespace"):
        ns = ".*" if value == "*" else re.escape(value.rstrip("*")) + (".*" if value.endswith("*") else "")
        return rbac.Principal(authenticated=rbac.Principal.Authenticated(principal_name=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=f".*/ns/{ns}/.*"))))
    if field in ("ipBlocks", "source.ip", "remote.ip"):
        return rbac.Principal(direct_remote_ip=_cidr(value))
    if field.startswith("request.headers["):
        return rbac.Principal(header=_header(field[len("request.headers["):-1], value))
    raise _Unsupported(field)


def _permission_of(field: str, value: str) -> rbac.Permission:
    if field == "hosts":
        return rbac.Permission(header=_header(":authority", value))
    if field == "methods":
        return rbac.Permission(header=_header(":method", value))
    if field == "paths":
        return rbac.Permission(url_path=path_pb2.PathMatcher(path=_string(value)))
    raise _Unsupported(field)


def _ids(field: str, values: Sequence[str], negate: bool, issuers: tuple[str, ...] | None = None) -> rbac.Principal:
    one = rbac.Principal(or_ids=rbac.Principal.Set(ids=[_principal_of(field, v, issuers) for v in values]))
    return rbac.Principal(not_id=one) if negate else one


def _perms(field: str, values: Sequence[str], negate: bool) -> rbac.Permission:
    one = rbac.Permission(or_rules=rbac.Permission.Set(rules=[_permission_of(field, v) for v in values]))
    return rbac.Permission(not_rule=one) if negate else one


def _fields(entry: Mapping[str, Any], action: str, jwt: bool = False) -> list[tuple[str, Sequence[str], bool]]:
    out = []
    for key, values in entry.items():
        if not values:
            continue
        negate = key.startswith("not")
        field = key[3].lower() + key[4:] if negate else key
        if key in _JWT_ONLY and not jwt:
            if action == "ALLOW":
                raise _Unsupported(key)
            continue
        out.append((field, values, negate))
    return out


def _policy(rule: Mapping[str, Any], action: str, issuers: tuple[str, ...] | None) -> rbac.Policy | None:
    try:
        principals = []
        froms = []
        for f in rule.get("from") or []:
            source = _fields(f.get("source") or {}, action, issuers is not None)
            ids = []
            for field, values, neg in source:
                try:
                    ids.append(_ids(field, values, neg, issuers))
                except _Unsupported:
                    if action == "ALLOW":
                        raise
                    # a DENY leaves out what Envoy cannot check: it denies more, never less
            froms.append(rbac.Principal(and_ids=rbac.Principal.Set(ids=ids)) if ids else rbac.Principal(any=True))
        if froms:
            principals.append(rbac.Principal(or_ids=rbac.Principal.Set(ids=froms)))
        tos = []
        for t in rule.get("to") or []:
            perms = [_perms(field, values, neg) for field, values, neg in _fields(t.get("operation") or {}, action)]
            tos.append(rbac.Permission(and_rules=rbac.Permission.Set(rules=perms)) if perms
                       else rbac.Permission(any=True))
        for c in rule.get("when") or []:
            key = c["key"]
            if key.startswith("request.auth.") and issuers is None:
                if action == "ALLOW":
                    return None
                continue
            try:
                if c.get("values"):
                    principals.append(_ids(key, c["values"], False, issuers))
                if c.get("notValues"):
                    principals.append(_ids(key, c["notValues"], True, issuers))
            except _Unsupported:
                if action == "ALLOW":
                    raise  # a DENY leaves it out

    except _Unsupported:
        return None  # only an ALLOW rule raises: it cannot grant what Envoy cannot check
    return rbac.Policy(
        permissions=[rbac.Permission(or_rules=rbac.Permission.Set(rules=tos))] if tos else [rbac.Permission(any=True)],
        principals=[rbac.Principal(and_ids=rbac.Principal.Set(ids=principals))] if principals
        else [rbac.Principal(any=True)])


def _rules(policies: Iterable[Mapping[str, Any]], action: str, issuers: tuple[str, ...] | None) -> rbac.RBAC:
    out = rbac.RBAC(action=rbac.RBAC.ALLOW if action == "ALLOW" else rbac.RBAC.DENY)
    for p in policies:
        for i, rule in enumerate(p.get("rules") or []):
            pol = _policy(rule, action, issuers)
            if pol is not None:
                out.policies[f"{p['name']}[{i}]"].CopyFrom(pol)
    return out


def _filter(config: rbac_filter.RBAC) -> hcm_pb2.HttpFilter:
    a = any_pb2.Any()
    a.Pack(config)
    return hcm_pb2.HttpFilter(name=_FILTER, typed_config=a)


def envoy_rbac_filters(config: Mapping[str, Any] | None,
                       issuers: tuple[str, ...] | None = None) -> list[hcm_pb2.HttpFilter]:
    """``authz.rbac``'s config (from :func:`~sofamesh.pilot.xds.workload_security.rbac_config`) as
    Envoy RBAC filters, DENY before ALLOW as Istio orders them. ``issuers``: those of the JWT filter
    before them (``None``: no JWT filter, no request principal)."""
    if not config:
        return []
    policies = list(config.get("policies") or [])
    out = []
    for action in ("DENY", "ALLOW"):
        enforced = [p for p in policies if p["action"] == action and not p.get("dry_run")]
        shadow = [p for p in policies if p["action"] == action and p.get("dry_run")]
        if enforced:
            out.append(_filter(rbac_filter.RBAC(rules=_rules(enforced, action, issuers))))
        if shadow:
            out.append(_filter(rbac_filter.RBAC(shadow_rules=_rules(shadow, action, issuers),
                                                shadow_rules_stat_prefix="istio_dry_run_")))
    return out


__all__ = ["envoy_rbac_filters"]
