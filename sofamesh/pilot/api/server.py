"""The aiohttp application: Open Service Registry API (/v1, /openapi.json) and Pilot admin
(/ready, /debug/syncz, /debug/registry, /debug/sync, /metrics), the dashboard (/ui, api/dashboard.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sofamesh.core.errors import ConfigError, MeshError
from sofamesh.pilot.api import bodies
from sofamesh.pilot.api.dashboard import add_routes as add_dashboard_routes
from sofamesh.pilot.api.openapi import document
from sofamesh.pilot.api.policy import add_routes as add_policy_routes
from sofamesh.pilot.api.security import add_routes as add_security_routes

if TYPE_CHECKING:
    from sofamesh.pilot.view import PilotView

_PILOT: web.AppKey[PilotView] = web.AppKey("pilot")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=str)


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status, dumps=_dumps)


def _indexed(data: dict[str, Any], index: int) -> web.Response:
    data["index"] = index
    return web.json_response(data, headers={"X-Sofamesh-Index": str(index)}, dumps=_dumps)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    pilot = request.app[_PILOT]
    try:
        resp = await handler(request)
    except ConfigError as exc:
        resp = _error(400, str(exc), exc.path)
    except MeshError as exc:
        resp = _error(503, str(exc))
    except web.HTTPException as exc:
        resp = _error(exc.status, exc.reason)
    if request.path.startswith("/v1/"):
        pilot.metrics.api_requests.labels(request.method, str(resp.status)).inc()
    return resp


def _service_doc(pilot: PilotView, name: str) -> dict[str, Any]:
    svc = pilot.model.service(name)
    assert svc is not None
    return {**svc.to_dict(), "instances": len(pilot.model.instances(name))}


async def list_services(request: web.Request) -> web.Response:
    pilot = request.app[_PILOT]
    index = bodies.parse_index(request.query.get("index"))
    wait = bodies.parse_wait(request.query.get("wait"))
    current = pilot.model.index
    if index is not None and wait > 0:
        current = await pilot.model.wait(None, index, wait)
    return _indexed({"services": [_service_doc(pilot, n) for n in sorted(pilot.model.services())]}, current)


async def list_instances(request: web.Request) -> web.Response:
    pilot = request.app[_PILOT]
    name = bodies.check_id(request.match_info["service"], "service")
    index = bodies.parse_index(request.query.get("index"))
    wait = bodies.parse_wait(request.query.get("wait"))
    current = pilot.model.service_index(name)
    if index is not None and wait > 0:
        current = await pilot.model.wait(name, index, wait)
    if pilot.model.service(name) is None:
        return _error(404, f"unknown service {name!r}")
    return _indexed({"service": _service_doc(pilot, name),
                     "instances": [i.to_dict() for i in pilot.model.instances(name)]}, current)


async def register(request: web.Request) -> web.Response:
    pilot = request.app[_PILOT]
    reg = pilot.writable_registry()
    service = bodies.check_id(request.match_info["service"], "service")
    instance_id = bodies.check_id(request.match_info["id"], "id")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("body", f"not valid JSON: {exc}") from None
    svc, inst, ttl = bodies.instance_from_body(service, instance_id, body, reg.name,
                                               reg.services().get(service))
    await reg.register(svc, inst, ttl)
    return _indexed({"instance": inst.to_dict(), "ttl_seconds": ttl}, pilot.model.service_index(service))


async def _on_instance(request: web.Request, action: str) -> web.Response:
    """Deregister or heartbeat one instance of the writable registry; 404 when it is unknown."""
    pilot = request.app[_PILOT]
    reg = pilot.writable_registry()
    service, instance_id = request.match_info["service"], request.match_info["id"]
    if reg.services().get(service) is None:
        return _error(404, f"unknown service {service!r}")
    done = await (reg.deregister if action == "deregistered" else reg.heartbeat)(service, instance_id)
    if not done:
        return _error(404, f"service {service!r} has no instance {instance_id!r} in registry {reg.name!r}")
    return _indexed({action: instance_id}, pilot.model.service_index(service))


async def deregister(request: web.Request) -> web.Response:
    return await _on_instance(request, "deregistered")


async def heartbeat(request: web.Request) -> web.Response:
    return await _on_instance(request, "renewed")


async def openapi(request: web.Request) -> web.Response:
    from sofamesh.pilot import __version__

    return web.json_response(document(__version__), dumps=_dumps)


async def ready(request: web.Request) -> web.Response:
    pilot = request.app[_PILOT]
    if pilot.ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="starting\n")


async def syncz(request: web.Request) -> web.Response:
    pilot = request.app[_PILOT]
    fence = {"runs": pilot.fence.runs, "failures": pilot.fence_failures, "used": pilot.ads.fence is not None}
    return web.json_response({**pilot.ads.describe(), "fence": fence}, dumps=_dumps)


async def registry_dump(request: web.Request) -> web.Response:
    pilot = request.app[_PILOT]
    writable = pilot.writable_name
    regs = [{"name": r.name, "kind": type(r).__name__, "writable": r.name == writable,
             "stale": r.stale, **r.describe(),
             "services": {n: [i.to_dict() for i in r.instances(n)] for n in sorted(r.services())}}
            for r in pilot.registries]
    model = {n: {**s.to_dict(), "index": pilot.model.service_index(n),
                 "instances": [i.to_dict() for i in pilot.model.instances(n)]}
             for n, s in sorted(pilot.model.services().items())}
    return web.json_response({"index": pilot.model.index, "registries": regs, "model": model}, dumps=_dumps)


async def sync_status(request: web.Request) -> web.Response:
    pilot = request.app[_PILOT]
    doc: dict[str, Any] = {"enabled": pilot.sync is not None}
    if pilot.sync is not None:
        doc.update(pilot.sync.describe())
        doc["running"] = pilot.election is None or pilot.election.leader
        if pilot.election is not None:
            doc["election"] = pilot.election.describe()
    return web.json_response(doc, dumps=_dumps)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[_PILOT].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_app(pilot: PilotView) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[_PILOT] = pilot
    app.router.add_get("/v1/services", list_services)
    app.router.add_get("/v1/services/{service}/instances", list_instances)
    app.router.add_put("/v1/services/{service}/instances/{id}", register)
    app.router.add_delete("/v1/services/{service}/instances/{id}", deregister)
    app.router.add_put("/v1/services/{service}/instances/{id}/heartbeat", heartbeat)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/ready", ready)
    app.router.add_get("/debug/syncz", syncz)
    app.router.add_get("/debug/registry", registry_dump)
    app.router.add_get("/debug/sync", sync_status)
    app.router.add_get("/metrics", metrics)
    add_policy_routes(app, pilot)
    add_security_routes(app, pilot)
    add_dashboard_routes(app, pilot)
    for reg in pilot.registries:
        app.router.add_routes(reg.http_routes())
    return app


__all__ = ["build_app"]
