"""Token and CA endpoints on Pilot's API port: ``POST /v1/tokens`` (issue a token bound to one
identity), ``DELETE /v1/tokens/{jti}`` (revoke one), ``POST /v1/ca/root-rotation`` (a step of a root
rotation), ``GET /v1/ca/roots`` (the trust bundle, PEM: what a client of the TLS xDS port verifies
Pilot with), ``GET /debug/ca`` (the CA, what it signed and refused, the TLS xDS port), ``GET /debug/jwks`` (the
``jwksUri`` keys Pilot fetched for Envoy sidecars). Reads only
the :class:`~sofamesh.pilot.view.PilotView`. The three that change something ask for the admin token.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sofamesh.core.errors import ConfigError

if TYPE_CHECKING:
    from sofamesh.pilot.view import PilotView

PILOT: web.AppKey[PilotView] = web.AppKey("security_pilot")


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=str)


def _refused(request: web.Request) -> web.Response | None:
    """401 / 403 unless the request carries the admin token (:mod:`sofamesh.pilot.security.admin`)."""
    refused = request.app[PILOT].admin.check(request.headers.get("Authorization"), f"{request.method} {request.path}")
    if refused is None:
        return None
    status, message = refused
    headers = {"WWW-Authenticate": 'Bearer realm="sofamesh-pilot"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers, dumps=_dumps)


async def create_token(request: web.Request) -> web.Response:
    """Body ``{"namespace": NS, "service_account": SA, "ttl_s": SECONDS}`` (ttl optional)."""
    if (refused := _refused(request)) is not None:
        return refused
    pilot = request.app[PILOT]
    ca = pilot.config.ca
    try:
        body = await request.json()
    except ValueError:
        raise ConfigError("body", "expected a JSON object") from None
    if not isinstance(body, dict):
        raise ConfigError("body", "expected a JSON object")
    unknown = sorted(set(body) - {"namespace", "service_account", "ttl_s"})
    if unknown:
        raise ConfigError(unknown[0], "unknown field (known: namespace, service_account, ttl_s)")
    for key in ("namespace", "service_account"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ConfigError(key, "required: a non-empty string")
    ttl = body.get("ttl_s", ca.token_ttl_s)
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 1 <= ttl <= ca.max_token_ttl_s:
        raise ConfigError("ttl_s", f"must be a number of seconds from 1 to {ca.max_token_ttl_s:g}")
    try:
        token, grant = pilot.tokens.issue(body["namespace"], body["service_account"], float(ttl))
    except ValueError as exc:
        raise ConfigError("namespace", str(exc)) from None
    return web.json_response({"token": token, "identity": grant.identity.uri, "jti": grant.jti,
                              "expires_at": grant.expires_at}, status=201, dumps=_dumps)


async def revoke_token(request: web.Request) -> web.Response:
    if (refused := _refused(request)) is not None:
        return refused
    pilot = request.app[PILOT]
    jti = request.match_info["jti"]
    pilot.tokens.revoke(jti)
    return web.json_response({"revoked": jti}, dumps=_dumps)


async def rotate_root(request: web.Request) -> web.Response:
    """Body ``{"step": "prepare" | "activate" | "finish"}``: one step of a root rotation
    (docs/security.md); answers what ``/debug/ca`` shows of the CA."""
    if (refused := _refused(request)) is not None:
        return refused
    try:
        body = await request.json()
    except ValueError:
        raise ConfigError("body", "expected a JSON object") from None
    if not isinstance(body, dict) or not isinstance(body.get("step"), str):
        raise ConfigError("step", "required: prepare, activate or finish")
    return web.json_response(request.app[PILOT].certificates.ca.rotate_root(body["step"]), dumps=_dumps)


async def ca_roots(request: web.Request) -> web.Response:
    return web.Response(text="".join(request.app[PILOT].certificates.ca.roots()),
                        content_type="application/x-pem-file")


async def debug_ca(request: web.Request) -> web.Response:
    pilot = request.app[PILOT]
    out = pilot.certificates.describe()
    if pilot.serving is not None and pilot.tls_port is not None:
        out["xds_tls"] = {"address": pilot.config.xds_tls.address if pilot.config.xds_tls else None,
                          "certificate": pilot.serving.describe(), **pilot.tls_port.describe()}
    return web.json_response(out, dumps=_dumps)


async def debug_jwks(request: web.Request) -> web.Response:
    """Each RequestAuthentication ``jwksUri`` Pilot fetches for Envoy sidecars: when, which keys, the last error."""
    return web.json_response(request.app[PILOT].jwks.describe(), dumps=_dumps)


def add_routes(app: web.Application, pilot: PilotView) -> None:
    app[PILOT] = pilot
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_delete("/v1/tokens/{jti}", revoke_token)
    app.router.add_post("/v1/ca/root-rotation", rotate_root)
    app.router.add_get("/v1/ca/roots", ca_roots)
    app.router.add_get("/debug/ca", debug_ca)
    app.router.add_get("/debug/jwks", debug_jwks)


__all__ = ["add_routes"]
