"""The ``authn.jwt`` config Pilot builds from RequestAuthentication, as Envoy's JWT filter
(``envoy.filters.http.jwt_authn``, what istiod sends an Envoy sidecar), and the RBAC principals that
match what it verified.

As Istio: one provider per ``jwtRules`` entry (issuer, audiences, the JWKS inline, where the token is
read from: ``fromHeaders`` name + prefix and ``fromParams``, else ``Authorization: Bearer`` and the
``access_token`` parameter; ``forwardOriginalToken`` (default: the token is removed before the app);
``outputPayloadToHeader``), and one requirement for every path, "any provider, or no token at all": a
request without a token passes with no request principal (an AuthorizationPolicy asking for one with
``requestPrincipals`` then refuses it: 403), a token no provider verifies is refused (401). A
``jwksUri``'s keys are fetched by Pilot (:mod:`sofamesh.pilot.security.jwks`) and inlined, as istiod
does; until they were fetched once, a key nobody holds is inlined (its tokens get 401).

The verified payload is kept in the request's dynamic metadata (filter ``envoy.filters.http.jwt_authn``,
key ``payload``), where the RBAC filter after it reads it. Istio matches its own ``istio_authn``
filter's ``request.auth.*`` there; plain Envoy has no such filter, so a request principal
``<iss>/<sub>`` becomes ``iss`` and ``sub`` matchers, split at the end of each configured issuer
(exact, ``abc*``, ``*abc``, ``*``: the same strings Istio compares), ``request.auth.audiences`` the
``aud`` claim, ``request.auth.presenter`` ``azp``, ``request.auth.claims[a][b]`` the claim at that
path; a claim matches as a string or as a list holding a matching string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2
from envoy.type.matcher.v3 import value_pb2 as value_matcher_pb2
from google.protobuf import any_pb2, empty_pb2

_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"


JwksFor = Callable[[str], str]
"""A ``jwksUri``'s keys as Pilot last fetched them (:meth:`~sofamesh.pilot.security.jwks.JwksResolver.keys`)."""


def _sent(jwt: Mapping[str, Any] | None, jwks_for: JwksFor | None) -> list[tuple[Mapping[str, Any], str]]:
    out = []
    for p in (jwt or {}).get("providers") or []:
        if p.get("jwks"):
            out.append((p, str(p["jwks"])))
        elif p.get("jwks_uri") and jwks_for is not None:
            out.append((p, jwks_for(str(p["jwks_uri"]))))
    return out


def issuers(jwt: Mapping[str, Any] | None, jwks_for: JwksFor | None = None) -> tuple[str, ...]:
    """The issuers of the providers sent to Envoy (an inline JWKS, or a ``jwksUri`` Pilot fetches)."""
    return tuple(
        str(p["issuer"])
        for p in (jwt or {}).get("providers") or []
        if p.get("jwks") or (p.get("jwks_uri") and jwks_for is not None)
    )


def envoy_jwt_filters(jwt: Mapping[str, Any] | None, jwks_for: JwksFor | None = None) -> list[hcm_pb2.HttpFilter]:
    """``authn.jwt``'s config (from :func:`~sofamesh.pilot.xds.workload_security.jwt_config`) as
    Envoy's JWT filter, or nothing when no provider applies. ``jwks_for``: the keys of a ``jwksUri``
    (``None``: such providers are not sent)."""
    config = jwt_pb2.JwtAuthentication()
    names = []
    for p, keys in _sent(jwt, jwks_for):
        provider = jwt_pb2.JwtProvider(
            issuer=p["issuer"],
            audiences=list(p.get("audiences") or []),
            forward=bool(p.get("forward_original_token")),
            payload_in_metadata=PAYLOAD_KEY,
            forward_payload_header=str(p.get("output_payload_to_header") or ""),
        )
        provider.local_jwks.inline_string = keys
        for h in p.get("from_headers") or []:
            provider.from_headers.add(name=h["name"], value_prefix=h.get("prefix", ""))
        provider.from_params.extend(p.get("from_params") or [])
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


def _claim(path: Sequence[str], value: value_matcher_pb2.ValueMatcher) -> rbac.Principal:
    return rbac.Principal(
        metadata=metadata_pb2.MetadataMatcher(
            filter=_FILTER,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (PAYLOAD_KEY, *path)],
            value=value,
        )
    )


def _string(value: str) -> string_pb2.StringMatcher:
    """Istio's matching of a value: ``abc`` exact, ``abc*`` prefix, ``*abc`` suffix, ``*`` any non-empty."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1])
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    return string_pb2.StringMatcher(exact=value)


def _any(ids: list[rbac.Principal]) -> rbac.Principal:
    if not ids:
        return rbac.Principal(not_id=rbac.Principal(any=True))  # nothing this filter verifies can match
    return ids[0] if len(ids) == 1 else rbac.Principal(or_ids=rbac.Principal.Set(ids=ids))


def _iss_sub(issuer: str, sub: string_pb2.StringMatcher | None) -> rbac.Principal:
    iss = _claim(("iss",), value_matcher_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=issuer)))
    if sub is None:
        return iss
    return rbac.Principal(
        and_ids=rbac.Principal.Set(ids=[iss, _claim(("sub",), value_matcher_pb2.ValueMatcher(string_match=sub))])
    )


def request_principal(value: str, known: Sequence[str]) -> rbac.Principal:
    """The principal matching a request principal pattern (``<iss>/<sub>`` compared as Istio does:
    exact, ``abc*`` prefix, ``*abc`` suffix, ``*`` any) against a token verified for one of the
    ``known`` issuers: a union over the issuers the pattern can meet."""
    if value == "*":
        return _claim(("iss",), value_matcher_pb2.ValueMatcher(present_match=True))
    ids = []
    if value.endswith("*"):  # prefix: within the issuer (any sub), or the issuer and a prefix of the sub
        text = value[:-1]
        for i in known:
            if (i + "/").startswith(text):
                ids.append(_iss_sub(i, None))
            elif text.startswith(i + "/"):
                rest = text[len(i) + 1 :]
                ids.append(_iss_sub(i, string_pb2.StringMatcher(prefix=rest)))
    elif value.startswith("*"):  # suffix: within the sub (any issuer), or the sub and an issuer's end
        text = value[1:]
        ids.append(_claim(("sub",), value_matcher_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(suffix=text))))
        for at in (k for k, c in enumerate(text) if c == "/"):
            head, tail = text[:at], text[at + 1 :]
            for i in known:
                if i.endswith(head):
                    ids.append(_iss_sub(i, string_pb2.StringMatcher(exact=tail)))
    else:
        for i in known:
            if value.startswith(i + "/"):
                ids.append(_iss_sub(i, string_pb2.StringMatcher(exact=value[len(i) + 1 :])))
    return _any(ids)


def claim(path: Sequence[str], value: str) -> rbac.Principal:
    """A claim of the verified payload at ``path`` matching ``value`` (Istio's forms), as a string
    or as a list holding such a string (``aud``, ``groups``, ...)."""
    match = _string(value)
    return rbac.Principal(
        or_ids=rbac.Principal.Set(
            ids=[
                _claim(path, value_matcher_pb2.ValueMatcher(string_match=match)),
                _claim(
                    path,
                    value_matcher_pb2.ValueMatcher(
                        list_match=value_matcher_pb2.ListMatcher(
                            one_of=value_matcher_pb2.ValueMatcher(string_match=match)
                        )
                    ),
                ),
            ]
        )
    )


def claim_path(key: str) -> tuple[str, ...] | None:
    """``request.auth.claims[a][b]`` -> ``("a", "b")``; ``request.auth.audiences`` -> ``("aud",)``,
    ``request.auth.presenter`` -> ``("azp",)``; ``None`` for another key or a malformed one."""
    if key == "request.auth.audiences":
        return ("aud",)
    if key == "request.auth.presenter":
        return ("azp",)
    prefix = "request.auth.claims"
    if not key.startswith(prefix + "[") or not key.endswith("]"):
        return None
    parts = key[len(prefix) + 1 : -1].split("][")
    return tuple(parts) if all(parts) else None


__all__ = ["PAYLOAD_KEY", "JwksFor", "claim", "claim_path", "envoy_jwt_filters", "issuers", "request_principal"]
