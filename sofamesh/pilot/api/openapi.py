"""The OpenAPI 3.0 document of the Open Service Registry API and the policy REST API, served at
``/openapi.json``."""

from __future__ import annotations

from typing import Any

from sofamesh.pilot.model import Health, known_protocols

_ERROR = {"description": "Bad input; `field` names the offending field",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NOT_FOUND = {"description": "Unknown service or instance",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_WATCH_PARAMS = [
    {"name": "index", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
     "description": "Blocking query: return when the watched index exceeds this value (X-Sofamesh-Index)"},
    {"name": "wait", "in": "query", "required": False, "schema": {"type": "string", "example": "30s"},
     "description": "Blocking query: longest wait, seconds (`10`, `10s`, `500ms`, `1m`; at most 300 s)"},
]
_PATH_PARAMS = [
    {"name": "service", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
]
_INDEX_HEADER = {"X-Sofamesh-Index": {"schema": {"type": "integer"},
                                      "description": "The index of what was read; pass it back as `index`"}}


def _json(ref: str, desc: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    out: dict[str, Any] = {"description": desc, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_STATUS = {"description": "Kubernetes Status: `message`/`error` say what is wrong; `issues` name each field "
                        "(path, message, severity)",
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}
_POLICY_PARAMS = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in ("group", "version", "namespace", "plural")]
_OBJECT = {"description": "The resource", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/PolicyObject"}}}}
_LIST = {"description": "The resources", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/PolicyList"}}}}


def _policy_paths() -> dict[str, Any]:
    """Kubernetes-style REST for policy resources (``pilot/api/policy.py``)."""
    named: list[dict[str, Any]] = [*_POLICY_PARAMS,
                                   {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    write: dict[str, Any] = {"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/PolicyObject"}},
                 "application/yaml": {"schema": {"$ref": "#/components/schemas/PolicyObject"}}}},
             "responses": {"200": {**_OBJECT, "description": "Replaced (header X-Sofamesh-Result: configured or "
                                                             "unchanged)"},
                           "201": {**_OBJECT, "description": "Created"}, "400": _STATUS, "404": _STATUS,
                           "422": {**_STATUS, "description": "Rejected by validation; nothing was stored"},
                           "503": _STATUS}}
    dry_run = {"name": "dryRun", "in": "query", "required": False, "schema": {"type": "string", "enum": ["All"]},
               "description": "Validate only"}
    out: dict[str, Any] = {}
    for base in ("/apis/{group}/{version}", "/api/{version}"):  # the second: the core group (Secrets)
        out.update(_policy_base(base, named, write, dry_run))
    out["/debug/policy/analyze"] = {"get": {
        "summary": "What `sofamesh analyze` reports", "operationId": "analyzePolicy",
        "responses": {"200": {"description": "Findings (level, code, resource, message)"}}}}
    return out


def _policy_base(base: str, named: list[dict[str, Any]], write: dict[str, Any],
                 dry_run: dict[str, Any]) -> dict[str, Any]:
    core = "{group}" not in base
    suffix = "Core" if core else ""
    params = [p for p in _POLICY_PARAMS if not (core and p["name"] == "group")]
    named = [p for p in named if not (core and p["name"] == "group")]
    return {
        base + "/{plural}": {"get": {
            "summary": "List policy resources across namespaces", "operationId": "listPolicyAllNamespaces" + suffix,
            "parameters": [p for p in params if p["name"] != "namespace"],
            "responses": {"200": _LIST, "404": _STATUS}}},
        base + "/namespaces/{namespace}/{plural}": {
            "get": {"summary": "List policy resources in a namespace", "operationId": "listPolicy" + suffix,
                    "parameters": params, "responses": {"200": _LIST, "404": _STATUS}},
            "post": {"summary": "Create or replace a policy resource (named by its metadata.name)",
                     "operationId": "createPolicy" + suffix, "parameters": [*params, dry_run], **write}},
        base + "/namespaces/{namespace}/{plural}/{name}": {
            "get": {"summary": "Read a policy resource", "operationId": "readPolicy" + suffix, "parameters": named,
                    "responses": {"200": _OBJECT, "404": _STATUS}},
            "put": {"summary": "Create or replace a policy resource", "operationId": "replacePolicy" + suffix,
                    "parameters": [*named, dry_run], **write},
            "delete": {"summary": "Delete a policy resource", "operationId": "deletePolicy" + suffix,
                       "parameters": named, "responses": {"200": {"description": "Deleted (a Status)"},
                                                          "404": _STATUS, "503": _STATUS}}},
    }


def _policy_schemas() -> dict[str, Any]:
    from sofamesh.pilot.policy.kinds import KINDS

    kinds = [f"{k.group or 'core'}/{k.kind} ({', '.join(k.versions)})" for k in KINDS]
    return {
        "PolicyObject": {"type": "object", "required": ["apiVersion", "kind", "metadata"],
                         "description": "One of: " + "; ".join(kinds), "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {
                "name": {"type": "string"}, "namespace": {"type": "string", "default": "default"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "resourceVersion": {"type": "string", "readOnly": True}}},
            "spec": {"type": "object", "description": "As Istio's (or Aeraki's) reference documents it; a core "
                                                      "kind (Secret) has its fields beside metadata instead"}}},
        "PolicyList": {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {"resourceVersion": {"type": "string"}}},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/PolicyObject"}}}},
        "Status": {"type": "object", "properties": {
            "kind": {"type": "string"}, "status": {"type": "string"}, "message": {"type": "string"},
            "error": {"type": "string"}, "reason": {"type": "string"}, "code": {"type": "integer"},
            "issues": {"type": "array", "items": {"type": "object", "properties": {
                "path": {"type": "string"}, "message": {"type": "string"},
                "severity": {"type": "string", "enum": ["error", "warning"]}}}}}},
    }


def document(version: str) -> dict[str, Any]:
    str_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "sofamesh Open Service Registry API", "version": version,
                 "description": "Register, renew, deregister and watch service instances. Writes go "
                                "to Pilot's writable registry; reads show the mesh model merged from "
                                "every registry."},
        "paths": {
            "/v1/services": {"get": {
                "summary": "List services", "operationId": "listServices", "parameters": _WATCH_PARAMS,
                "responses": {"200": _json("ServiceList", "Every service", _INDEX_HEADER), "400": _ERROR}}},
            "/v1/services/{service}/instances": {"get": {
                "summary": "List the instances of a service", "operationId": "listInstances",
                "parameters": [_PATH_PARAMS[0], *_WATCH_PARAMS],
                "responses": {"200": _json("InstanceList", "The instances", _INDEX_HEADER), "400": _ERROR,
                              "404": _NOT_FOUND}}},
            "/v1/services/{service}/instances/{id}": {
                "put": {"summary": "Register or replace an instance", "operationId": "registerInstance",
                        "parameters": _PATH_PARAMS,
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/InstanceRegistration"}}}},
                        "responses": {"200": _json("Registered", "Registered", _INDEX_HEADER), "400": _ERROR,
                                      "503": _ERROR}},
                "delete": {"summary": "Deregister an instance", "operationId": "deregisterInstance",
                           "parameters": _PATH_PARAMS,
                           "responses": {"200": _json("Deregistered", "Deregistered", _INDEX_HEADER),
                                         "404": _NOT_FOUND, "503": _ERROR}}},
            "/v1/services/{service}/instances/{id}/heartbeat": {"put": {
                "summary": "Renew an instance's TTL lease", "operationId": "heartbeatInstance",
                "parameters": _PATH_PARAMS,
                "responses": {"200": _json("Heartbeat", "Lease renewed"), "404": _NOT_FOUND, "503": _ERROR}}},
            **_policy_paths(),
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "field": {"type": "string"}}},
            "InstanceRegistration": {"type": "object", "required": ["address", "port"],
                                     "additionalProperties": False, "properties": {
                "address": {"type": "string", "description": "IP address or host name"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "protocol": {"type": "string", "enum": list(known_protocols()), "default": "http"},
                "weight": {"type": "integer", "minimum": 1, "maximum": 128, "default": 1},
                "labels": {**str_map, "description": "`region`, `zone`, `sub_zone` set the locality"},
                "version": {"type": "string"}, "group": {"type": "string"},
                "health": {"type": "string", "enum": [h.value for h in Health], "default": "healthy"},
                "ttl_seconds": {"type": "number", "minimum": 0, "maximum": 86400, "nullable": True,
                                "description": "Lease: the instance goes away unless it heartbeats "
                                               "within this time"},
                "service_ports": {"type": "array", "items": {"type": "integer"},
                                  "description": "Ports clients address the service on "
                                                 "(cluster names use them)"},
                "service_metadata": str_map}},
            "Instance": {"type": "object", "properties": {
                "service": {"type": "string"}, "id": {"type": "string"}, "address": {"type": "string"},
                "port": {"type": "integer"}, "weight": {"type": "integer"}, "labels": str_map,
                "version": {"type": "string"}, "group": {"type": "string"}, "health": {"type": "string"},
                "origin": {"type": "string", "description": "The registry this instance comes from"}}},
            "Service": {"type": "object", "properties": {
                "name": {"type": "string"}, "protocol": {"type": "string"},
                "ports": {"type": "array", "items": {"type": "integer"}}, "metadata": str_map,
                "instances": {"type": "integer"}}},
            "ServiceList": {"type": "object", "properties": {
                "index": {"type": "integer"},
                "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}}}},
            "InstanceList": {"type": "object", "properties": {
                "index": {"type": "integer"}, "service": {"$ref": "#/components/schemas/Service"},
                "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}}}},
            "Registered": {"type": "object", "properties": {
                "index": {"type": "integer"}, "instance": {"$ref": "#/components/schemas/Instance"},
                "ttl_seconds": {"type": "number", "nullable": True}}},
            "Deregistered": {"type": "object", "properties": {
                "index": {"type": "integer"}, "deregistered": {"type": "string"}}},
            "Heartbeat": {"type": "object", "properties": {"renewed": {"type": "string"}}},
            **_policy_schemas(),
        }},
    }


__all__ = ["document"]
