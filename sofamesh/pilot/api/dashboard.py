"""The dashboard on Pilot's API port: ``/ui`` (static HTML, JS and CSS shipped in the package) and
the JSON it and the ``proxy-status`` / ``proxy-config`` / ``describe`` commands read:

- ``/debug/proxy_status``: one row per connected proxy, per xDS type SYNCED / STALE / NOT SENT / NACKED;
- ``/debug/proxy_config/{proxy}/{type}``: the resources of one type Pilot last sent that proxy;
- ``/debug/services`` and ``/debug/services/{name}``: services, instances per registry, policies, callers;
- ``/debug/graph``: the call graph scraped from the sidecars' admin servers (``pilot/traffic.py``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sofamesh.pilot.describe import describe_service, summary
from sofamesh.pilot.xds.status import TYPE_WORDS, proxy_config, proxy_status

if TYPE_CHECKING:
    from sofamesh.pilot.view import PilotView

PILOT: web.AppKey[PilotView] = web.AppKey("dashboard-pilot")
_UI_FILES = {"index.html": "text/html", "dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=str)


def _not_found(message: str) -> web.Response:
    return web.json_response({"error": message}, status=404, dumps=_dumps)


async def debug_proxy_status(request: web.Request) -> web.Response:
    return web.json_response({"proxies": proxy_status(request.app[PILOT].ads)}, dumps=_dumps)


async def debug_proxy_config(request: web.Request) -> web.Response:
    proxy, word = request.match_info["proxy"], request.match_info["type"]
    if word not in TYPE_WORDS:
        return _not_found(f"unknown config type {word!r} (known: cluster, listener, route, endpoint)")
    doc = proxy_config(request.app[PILOT].ads, proxy, word)
    if doc is None:
        return _not_found(f"no connected proxy {proxy!r} (see /debug/proxy_status)")
    return web.json_response(doc, dumps=_dumps)


async def debug_services(request: web.Request) -> web.Response:
    pilot = request.app[PILOT]
    return web.json_response({"services": [summary(pilot, n) for n in sorted(pilot.model.services())]}, dumps=_dumps)


async def debug_service(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    doc = describe_service(request.app[PILOT], name)
    if doc is None:
        return _not_found(f"unknown service {name!r} (see /debug/services)")
    return web.json_response(doc, dumps=_dumps)


async def debug_graph(request: web.Request) -> web.Response:
    return web.json_response(request.app[PILOT].traffic.describe(), dumps=_dumps)


async def ui_file(request: web.Request) -> web.Response:
    name = request.match_info.get("file") or "index.html"
    ctype = _UI_FILES.get(name)
    if ctype is None:
        return _not_found(f"no dashboard file {name!r}")
    body = resources.files("sofamesh.pilot").joinpath("ui", name).read_bytes()
    return web.Response(body=body, content_type=ctype, headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application, pilot: PilotView) -> None:
    app[PILOT] = pilot
    app.router.add_get("/debug/proxy_status", debug_proxy_status)
    app.router.add_get("/debug/proxy_config/{proxy}/{type}", debug_proxy_config)
    app.router.add_get("/debug/services", debug_services)
    app.router.add_get("/debug/services/{name:.+}", debug_service)
    app.router.add_get("/debug/graph", debug_graph)
    app.router.add_get("/ui", ui_file)
    app.router.add_get("/ui/", ui_file)
    app.router.add_get("/ui/{file}", ui_file)


__all__ = ["add_routes"]
