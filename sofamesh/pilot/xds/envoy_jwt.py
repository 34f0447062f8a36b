"""The ``authn.jwt`` config Pilot builds from RequestAuthentication, as Envoy's JWT filter
(``envoy.filters.http.jwt_authn``, what istiod sends an Envoy sidecar), and the RBAC principals that
match a request principal it verified.

As Istio: one provider per ``jwtRules`` entry (issuer, audiences, the JWKS inline, the token
forwarded upstream), and one requirement for every path, "any provider, or no token at all": a
request without a token passes with no request principal (an AuthorizationPolicy asking for one with
``requestPrincipals`` then refuses it: 403), a token no provider verifies is refused (401). The
verified payload is kept in the request's dynamic metadata (filter ``envoy.filters.http.jwt_authn``,
key ``payload``), where the RBAC filter after it reads ``iss`` and ``sub``. Istio matches its own
``istio_authn`` filter's ``request.auth.principal`` there; plain Envoy has no such filter, so a
request principal ``<iss>/<sub>`` is split at the end of a configured issuer.

A ``jwksUri`` provider is not sent (Envoy would need a cluster to fetch it): a token from its
issuer is refused as unverifiable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2
from envoy.type.matcher.v3 import value_pb2 as value_matcher_pb2
from google.protobuf import any_pb2, empty_pb2

_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"


class UnmatchablePrincipal(Exception):
    """A request principal pattern the RBAC filter cannot express against the verified payload."""


def issuers(jwt: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The issuers of the providers sent to Envoy (those with an inline JWKS)."""
    return tuple(str(p["issuer"]) for p in (jwt or {}).get("providers") or [] if p.get("jwks"))


def envoy_jwt_filters(jwt: Mapping[str, Any] | None) -> list[hcm_pb2.HttpFilter]:
    """``authn.jwt``'s config (from :func:`~sofamesh.pilot.xds.workload_security.jwt_config`) as
    Envoy's JWT filter, or nothing when no provider with an inline JWKS applies."""
    if not jwt or not jwt.get("providers"):
        return []
    config = jwt_pb2.JwtAuthentication()
    names = []
    for p in jwt["providers"]:
        if not p.get("jwks"):
            continue
        provider = jwt_pb2.JwtProvider(
            issuer=p["issuer"], audiences=list(p.get("audiences") or []), forward=True, payload_in_metadata=PAYLOAD_KEY
        )
        provider.local_jwks.inline_string = p["jwks"]
        for h in p.get("from_headers") or []:
            provider.from_headers.add(name=h["name"], value_prefix=h.get("prefix", ""))
        config.providers[p["name"]].CopyFrom(provider)
        names.append(p["name"])
    if not names:
        return []
    requirements = [jwt_pb2.JwtRequirement(provider_name=n) for n in names]
    requirements.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
    config.rules.add(
        match=route_components_pb2.RouteMatch(prefix="/"),
        requires=jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=requirements)),
    )
    a = any_pb2.Any()
    a.Pack(config)
    return [hcm_pb2.HttpFilter(name=_FILTER, typed_config=a)]


def _claim(claim: str, match: string_pb2.StringMatcher | None) -> rbac.Principal:
    value = (
        value_matcher_pb2.ValueMatcher(string_match=match)
        if match is not None
        else value_matcher_pb2.ValueMatcher(present_match=True)
    )
    return rbac.Principal(
        metadata=metadata_pb2.MetadataMatcher(
            filter=_FILTER,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (PAYLOAD_KEY, claim)],
            value=value,
        )
    )


def request_principal(value: str, known: Sequence[str]) -> rbac.Principal:
    """The principal matching a request principal ``<iss>/<sub>`` (Istio's ``abc`` exact, ``abc*``
    prefix, ``*`` any) in the verified payload of one of the ``known`` issuers."""
    if value == "*":
        return _claim("sub", None)
    prefix = value.endswith("*")
    text = value[:-1] if prefix else value
    issuer = max((i for i in known if text.startswith(i + "/")), key=len, default=None)
    if issuer is None:
        if text.startswith("*") or (prefix and any(i.startswith(text) for i in known)):
            raise UnmatchablePrincipal(value)
        return rbac.Principal(not_id=rbac.Principal(any=True))  # no provider can verify such a token
    sub = text[len(issuer) + 1 :]
    if prefix:
        sub_match = string_pb2.StringMatcher(prefix=sub) if sub else None
    else:
        sub_match = string_pb2.StringMatcher(exact=sub)
    return rbac.Principal(
        and_ids=rbac.Principal.Set(
            ids=[_claim("iss", string_pb2.StringMatcher(exact=issuer)), _claim("sub", sub_match)]
        )
    )


__all__ = ["PAYLOAD_KEY", "UnmatchablePrincipal", "envoy_jwt_filters", "issuers", "request_principal"]
