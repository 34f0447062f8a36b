"""Kubernetes-style REST for policy resources on Pilot's API port:

``/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]`` (GET, list, PUT/POST create or
replace, DELETE), ``/apis/{group}/{version}/{plural}`` (list across namespaces), the same under
``/api/{version}`` for the core group (Secrets), and ``/debug/policy`` and ``/debug/policy/analyze``.
A Secret's private key is never shown (``redact`` of its kind). Bodies are JSON or YAML. Reads only the
:class:`~sofamesh.pilot.view.PilotView`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from sofamesh.core.config.yaml_text import safe_load
from sofamesh.pilot.policy.analyze import analyze
from sofamesh.pilot.policy.kinds import Kind, by_plural
from sofamesh.pilot.policy.resource import Resource, ResourceKey, Source
from sofamesh.pilot.policy.validate import validate

if TYPE_CHECKING:
    from sofamesh.pilot.view import PilotView

PILOT: web.AppKey[PilotView] = web.AppKey("policy_pilot")
RESULT_HEADER = "X-Sofamesh-Result"


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=str)


def _status(status: int, message: str, reason: str, issues: list[dict[str, Any]] | None = None) -> web.Response:
    """An error in Kubernetes' ``Status`` shape, with ``error`` (the message) and ``issues`` (one per field)."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                            "reason": reason, "code": status, "error": message}
    if issues is not None:
        body["issues"] = issues
    return web.json_response(body, status=status, dumps=_dumps)


def _kind(request: web.Request) -> Kind:
    m = request.match_info
    group = m.get("group", "")
    kind = by_plural(group, m["version"], m["plural"])
    if kind is None:
        raise web.HTTPNotFound(reason=f"the server could not find the requested resource "
                                      f"{m['plural']}.{group}/{m['version']}")
    return kind


def _object(pilot: PilotView, resource: Resource, version: str, kind: Kind) -> dict[str, Any]:
    doc = resource.to_dict(version, pilot.policy.revision(resource.key))
    if kind.redact is None:
        return doc
    if kind.top_level:
        return {**doc, **kind.redact({k: doc[k] for k in kind.schema.fields if k in doc})}
    return {**doc, "spec": kind.redact(doc["spec"])}


def _list(request: web.Request, namespace: str | None) -> web.Response:
    pilot = request.app[PILOT]
    kind = _kind(request)
    version = request.match_info["version"]
    items = [_object(pilot, r, version, kind) for r in pilot.policy.resources(kind.kind, namespace)
             if r.group == kind.group]
    return web.json_response({"apiVersion": kind.api_version(version), "kind": f"{kind.kind}List",
                              "metadata": {"resourceVersion": str(pilot.policy.index)}, "items": items}, dumps=_dumps)


async def list_all(request: web.Request) -> web.Response:
    return _list(request, None)


async def list_namespaced(request: web.Request) -> web.Response:
    return _list(request, request.match_info["namespace"])


def _key(request: web.Request, kind: Kind) -> ResourceKey:
    m = request.match_info
    return ResourceKey(kind.group, kind.kind, m["namespace"], m["name"])


async def get_one(request: web.Request) -> web.Response:
    pilot = request.app[PILOT]
    kind = _kind(request)
    key = _key(request, kind)
    found = pilot.policy.get(key)
    if found is None:
        return _status(404, f'{kind.plural}.{kind.group} "{key.name}" not found in namespace {key.namespace}',
                       "NotFound")
    return web.json_response(_object(pilot, found, request.match_info["version"], kind), dumps=_dumps)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        text = raw.decode()
        if request.content_type == "application/json":
            return json.loads(text)
        return safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise _BadBody(f"the request body is not JSON or YAML: {exc}") from None


class _BadBody(Exception):
    pass


async def write(request: web.Request) -> web.Response:
    """PUT or POST: validate, then create or replace in the config store. 422 with every issue on rejection."""
    pilot = request.app[PILOT]
    kind = _kind(request)
    namespace = request.match_info["namespace"]
    try:
        body = await _body(request)
    except _BadBody as exc:
        return _status(400, str(exc), "BadRequest")
    verdict = validate(body, Source(request.headers.get("X-Sofamesh-Source", "request")), namespace)
    issues = [i.to_dict() for i in verdict.issues]
    if verdict.resource is None:
        return _status(422, f"{verdict.ref} is invalid: " + "; ".join(str(i) for i in verdict.errors), "Invalid",
                       issues)
    resource = verdict.resource
    name = request.match_info.get("name")
    if resource.kind != kind.kind or resource.group != kind.group:
        return _status(400, f"the body is a {resource.group}/{resource.kind}, the path is for {kind.plural}."
                            f"{kind.group}", "BadRequest", issues)
    if name is not None and resource.name != name:
        return _status(400, f"the name of the object ({resource.name}) does not match the name on the URL ({name})",
                       "BadRequest", issues)
    previous = pilot.policy.get(resource.key)
    if request.query.get("dryRun") == "All":
        result = "unchanged" if previous is not None and previous.same_content(resource) else "valid"
    elif previous is not None and previous.same_content(resource) and previous.api_version == resource.api_version:
        result = "unchanged"
    else:
        await pilot.config_store.put(resource)
        result = "configured" if previous is not None else "created"
    shown = pilot.policy.get(resource.key) or resource
    doc = _object(pilot, shown, request.match_info["version"], kind)
    if issues:
        doc["warnings"] = issues
    return web.json_response(doc, status=201 if result == "created" else 200, headers={RESULT_HEADER: result},
                             dumps=_dumps)


async def delete(request: web.Request) -> web.Response:
    pilot = request.app[PILOT]
    kind = _kind(request)
    key = _key(request, kind)
    if pilot.policy.get(key) is None:
        return _status(404, f'{kind.plural}.{kind.group} "{key.name}" not found in namespace {key.namespace}',
                       "NotFound")
    await pilot.config_store.delete(key)
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                              "details": {"name": key.name, "group": key.group, "kind": kind.plural}}, dumps=_dumps)


async def debug_policy(request: web.Request) -> web.Response:
    pilot = request.app[PILOT]
    return web.json_response({"store": {"type": pilot.config.config_store.type, "writable": pilot.config_store.writable,
                                        **pilot.config_store.describe()}, **pilot.policy.describe()}, dumps=_dumps)


async def debug_analyze(request: web.Request) -> web.Response:
    pilot = request.app[PILOT]
    findings = analyze(pilot.policy, pilot.model)
    return web.json_response({"findings": [f.to_dict() for f in findings]}, dumps=_dumps)


def add_routes(app: web.Application, pilot: PilotView) -> None:
    app[PILOT] = pilot
    for base in ("/apis/{group}/{version}", "/api/{version}"):
        ns = base + "/namespaces/{namespace}/{plural}"
        app.router.add_get(base + "/{plural}", list_all)
        app.router.add_get(ns, list_namespaced)
        app.router.add_post(ns, write)
        app.router.add_get(ns + "/{name}", get_one)
        app.router.add_put(ns + "/{name}", write)
        app.router.add_delete(ns + "/{name}", delete)
    app.router.add_get("/debug/policy", debug_policy)
    app.router.add_get("/debug/policy/analyze", debug_analyze)


__all__ = ["RESULT_HEADER", "add_routes"]
