"""VirtualService delegation, as Istio merges it (``mergeVirtualServicesIfNeeded``): a root
VirtualService's ``http`` route with ``delegate: {name, namespace}`` is replaced by the delegate
VirtualService's ``http`` routes, each matching only where the root route's match AND its own do.

- The delegate is the VirtualService ``namespace/name`` (namespace: the root's when absent) that
  has no ``hosts`` and is exported to the root's namespace; none: the root route is dropped.
- Matches: with N root matches and M delegate matches, each delegate match merges with every
  root match it does not conflict with (Istio's ``hasConflict``: a delegate ``uri`` / ``scheme`` /
  ``method`` / ``authority`` / header / query parameter must lie within the root's — an exact equal
  to the root's exact, an exact or prefix under the root's prefix, no regex on either side when the
  other has one —, equal ``port`` / ``sourceNamespace`` / ``ignoreUriCase``, no differing
  ``sourceLabels`` value, ``gateways`` a subset); a delegate match conflicting with every root
  match drops that delegate route. Merged: the delegate's fields, the root's where the delegate
  has none (headers, query parameters, withoutHeaders and sourceLabels merged key by key).
- Route fields the delegate route does not set (rewrite, timeout, retries, fault, mirror(s),
  mirrorPercentage, corsPolicy, headers, directResponse) come from the root route; names join as
  ``root-delegate``.
- Short hosts of the delegate's destinations resolve in the delegate's namespace, as Istio does.
- One level only: a delegate's own ``delegate`` routes are left out (the webhook refuses them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from sofamesh.pilot.policy.hosts import fqdn
from sofamesh.pilot.policy.resource import Resource

Lookup = Callable[[str, str], Resource | None]
"""(namespace, name) -> the VirtualService stored under it."""

_INHERITED = (
    "rewrite",
    "directResponse",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrorPercent",
    "mirrorPercentage",
    "corsPolicy",
    "mirrors",
    "headers",
)
_STRING_MATCHES = ("uri", "scheme", "method", "authority")
_MAP_MATCHES = ("headers", "queryParams", "withoutHeaders")


def _string_conflict(root: Any, leaf: Any) -> bool:
    if not isinstance(root, Mapping) or not isinstance(leaf, Mapping):
        return False
    if root.get("regex") and (leaf.get("regex") or leaf.get("prefix") or leaf.get("exact")):
        return True
    if leaf.get("regex") and (root.get("regex") or root.get("prefix") or root.get("exact")):
        return True
    exact = root.get("exact")
    if exact and (leaf.get("prefix") or leaf.get("exact") != exact):
        return True
    prefix = root.get("prefix")
    if prefix:
        if leaf.get("prefix") and not str(leaf["prefix"]).startswith(prefix):
            return True
        if leaf.get("exact") and not str(leaf["exact"]).startswith(prefix):
            return True
    return False


def has_conflict(root: Mapping[str, Any], leaf: Mapping[str, Any]) -> bool:
    """Istio's ``hasConflict``: whether ``leaf`` asks for something ``root`` excludes."""
    for key in _STRING_MATCHES:
        if _string_conflict(root.get(key), leaf.get(key)):
            return True
    for key in _MAP_MATCHES:
        rmap, lmap = root.get(key) or {}, leaf.get(key) or {}
        if any(_string_conflict(rmap[k], lmap[k]) for k in rmap.keys() & lmap.keys()):
            return True
    if bool(root.get("ignoreUriCase")) != bool(leaf.get("ignoreUriCase")):
        return True
    if root.get("port") and leaf.get("port") and root["port"] != leaf["port"]:
        return True
    rlabels, llabels = root.get("sourceLabels") or {}, leaf.get("sourceLabels") or {}
    if any(rlabels[k] != llabels[k] for k in rlabels.keys() & llabels.keys()):
        return True
    if root.get("gateways") and leaf.get("gateways") and not set(leaf["gateways"]) <= set(root["gateways"]):
        return True
    return bool(
        root.get("sourceNamespace")
        and leaf.get("sourceNamespace")
        and root["sourceNamespace"] != leaf["sourceNamespace"]
    )


def _join(root: Any, leaf: Any) -> Any:
    if not root:
        return leaf
    return f"{root}-{leaf}" if leaf else root


def merge_match(root: Mapping[str, Any], leaf: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(leaf)
    if root.get("name") or leaf.get("name"):
        out["name"] = _join(root.get("name"), leaf.get("name"))
    for key in (*_STRING_MATCHES, "port", "gateways", "sourceNamespace"):
        if not out.get(key) and root.get(key):
            out[key] = root[key]
    for key in (*_MAP_MATCHES, "sourceLabels"):
        if root.get(key):
            out[key] = {**root[key], **(leaf.get(key) or {})}
    return out


def merge_matches(root: list[Any], leaf: list[Any]) -> list[dict[str, Any]] | None:
    """The merged matches, or None when some delegate match fits no root match."""
    if not root:
        return [dict(m) for m in leaf]
    if not leaf:
        return [dict(m) for m in root]
    out = []
    for sub in leaf:
        fits = [merge_match(r, sub) for r in root if not has_conflict(r, sub)]
        if not fits:
            return None
        out += fits
    return out


def _resolve_hosts(route: dict[str, Any], namespace: str) -> None:
    """Destinations (and mirrors) of a delegate's route: short hosts in the delegate's namespace."""
    for d in route.get("route") or []:
        if isinstance(d, dict) and isinstance(d.get("destination"), dict) and d["destination"].get("host"):
            d["destination"]["host"] = fqdn(str(d["destination"]["host"]), namespace)
    if isinstance(route.get("mirror"), dict) and route["mirror"].get("host"):
        route["mirror"]["host"] = fqdn(str(route["mirror"]["host"]), namespace)
    for m in route.get("mirrors") or []:
        if isinstance(m, dict) and isinstance(m.get("destination"), dict) and m["destination"].get("host"):
            m["destination"]["host"] = fqdn(str(m["destination"]["host"]), namespace)


def merge_route(root: Mapping[str, Any], leaf: Mapping[str, Any], namespace: str) -> dict[str, Any] | None:
    """One delegate ``http`` route under a root route; None when their matches conflict."""
    matches = merge_matches(list(root.get("match") or []), list(leaf.get("match") or []))
    if matches is None:
        return None
    out = copy.deepcopy(dict(leaf))
    _resolve_hosts(out, namespace)
    if matches:
        out["match"] = matches
    if root.get("name") or leaf.get("name"):
        out["name"] = _join(root.get("name"), leaf.get("name"))
    for key in _INHERITED:
        if out.get(key) is None and root.get(key) is not None:
            out[key] = root[key]
    return out


def delegated_http(vs: Resource, lookup: Lookup) -> list[Mapping[str, Any]]:
    """``vs``'s ``http`` routes with each delegating route replaced by its delegate's merged routes."""
    routes = vs.spec.get("http") or []
    if not any(isinstance(r, Mapping) and r.get("delegate") for r in routes):
        return list(routes)
    out: list[Mapping[str, Any]] = []
    for r in routes:
        if not isinstance(r, Mapping):
            continue
        d = r.get("delegate")
        if not isinstance(d, Mapping):
            out.append(r)
            continue
        namespace = str(d.get("namespace") or vs.namespace)
        target = lookup(namespace, str(d.get("name", "")))
        if target is None or target.spec.get("hosts"):
            continue
        for leaf in target.spec.get("http") or []:
            if isinstance(leaf, Mapping) and not leaf.get("delegate"):
                merged = merge_route(r, leaf, target.namespace)
                if merged is not None:
                    out.append(merged)
    return out


__all__ = ["Lookup", "delegated_http", "has_conflict", "merge_matches", "merge_route"]
