"""Which accepted policy applies to which service of the mesh model: the binding xDS generation reads.

For each service: the VirtualService, DestinationRule and MetaRouter whose host names it (hosts
resolve as in :mod:`sofamesh.pilot.policy.hosts`: a short host in the resource's namespace); a
VirtualService bound to gateways only (no ``mesh``) is not for sidecars. One resource of a kind
binds a host. Seen from a proxy's namespace (:meth:`PolicySnapshot.view`), as in Istio:

- ``exportTo`` (:func:`visible`): ``*`` (the default) every namespace, ``.`` the resource's own,
  a name that namespace; ``~`` none;
- VirtualService, and MetaRouter as Aeraki reads it like one: among the visible ones, one in the
  proxy's namespace wins, else the first by namespace and name;
- ServiceEntry (:func:`service_visible`): its service exists only for proxies it is exported to;
- DestinationRule: those in the proxy's namespace (whatever their exportTo), else the visible ones in
  the service's namespace, else in the root namespace (``istio-system``); one elsewhere does not
  apply to this proxy. Several of that namespace are merged as Istio merges them
  (:func:`merged`): oldest ``metadata.creationTimestamp`` first (resources without one after those
  with one), then by name; subsets of later rules appended unless their name is taken; the
  top-level ``trafficPolicy`` of the first rule that has one.

Without a namespace (``view(None)``: no VirtualService / DestinationRule / limited ServiceEntry, MetaRouter
routing) the first by namespace and name wins (``sofamesh analyze`` reports the others as
IST0109). A :class:`PolicySnapshot` is computed from one (policy index, mesh index) pair and never
changes; :class:`AppliedPolicy` hands out the current one. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sofamesh.pilot.model import Service
from sofamesh.pilot.policy.delegate import delegated_http
from sofamesh.pilot.policy.hosts import EXPORT_METADATA, NAMESPACE_METADATA, HostIndex, ServiceView
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE, Resource, ResourceKey

_BOUND = ("VirtualService", "DestinationRule", "MetaRouter")
_SCOPED = ("VirtualService", "DestinationRule", "MetaRouter")
ROOT_NAMESPACE = "istio-system"
"""Istio's root (mesh config) namespace: a DestinationRule there applies to every namespace it is exported to."""


def visible(r: Resource, namespace: str) -> bool:
    """Whether ``r``'s ``exportTo`` makes it visible to a proxy in ``namespace``."""
    export = r.spec.get("exportTo") or ["*"]
    return any(e == "*" or (r.namespace if e == "." else e) == namespace for e in export)


def service_visible(service: Service, namespace: str | None) -> bool:
    """Whether a proxy in ``namespace`` sees ``service`` (a ServiceEntry's ``exportTo``; ``None``: any)."""
    export = service.metadata.get(EXPORT_METADATA)
    return not export or namespace is None or namespace in export.split(",")


def merge_order(rules: list[Resource]) -> list[Resource]:
    """Istio's order among DestinationRules of one namespace for one host: oldest creation first,
    then name (a rule without ``creationTimestamp`` after those with one)."""
    return sorted(rules, key=lambda r: (r.created == "", r.created, r.name))


def merged(rules: list[Resource]) -> Resource:
    """One DestinationRule from ``rules`` (one namespace, one host), as Istio merges them: the first's
    spec (:func:`merge_order`), the later ones' subsets appended when their name is not taken, the
    first top-level ``trafficPolicy`` found."""
    first, *rest = merge_order(rules)
    if not rest:
        return first
    spec = dict(first.spec)
    subsets = [s for s in spec.get("subsets") or [] if isinstance(s, Mapping)]
    names = {s.get("name") for s in subsets}
    for r in rest:
        for s in r.spec.get("subsets") or []:
            if isinstance(s, Mapping) and s.get("name") not in names:
                subsets.append(s)
                names.add(s.get("name"))
        if spec.get("trafficPolicy") is None and r.spec.get("trafficPolicy") is not None:
            spec["trafficPolicy"] = r.spec["trafficPolicy"]
    spec["subsets"] = subsets
    return replace(first, spec=spec)


def chosen_group(kind: str, candidates: list[Resource], proxy_ns: str | None, service_ns: str) -> list[Resource]:
    """The resources of ``kind`` among ``candidates`` (sorted by namespace and name) a proxy in
    ``proxy_ns`` uses for a service of ``service_ns``: one, or for DestinationRules those of one
    namespace, to merge (see the module docstring)."""
    if kind == "DestinationRule":
        if proxy_ns is None:
            return [r for r in candidates if r.namespace == candidates[0].namespace] if candidates else []
        local = [r for r in candidates if r.namespace == proxy_ns]
        if local:
            return local
        for ns in (service_ns, ROOT_NAMESPACE):
            found = [r for r in candidates if r.namespace == ns and visible(r, proxy_ns)]
            if found:
                return found
        return []
    if proxy_ns is None or kind not in _SCOPED:
        return candidates[:1]
    seen = [r for r in candidates if visible(r, proxy_ns)]  # VirtualService, MetaRouter
    return next(([r] for r in seen if r.namespace == proxy_ns), seen[:1])


def choose(kind: str, candidates: list[Resource], proxy_ns: str | None, service_ns: str) -> Resource | None:
    """The resource of ``kind`` a proxy in ``proxy_ns`` uses (:func:`chosen_group`, DestinationRules merged)."""
    group = chosen_group(kind, candidates, proxy_ns, service_ns)
    return merged(group) if group else None


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """The resources bound to one service, and their revisions (a generator's memo key)."""

    service: str
    virtual_service: Resource | None = None
    destination_rule: Resource | None = None
    meta_router: Resource | None = None
    revision: tuple[tuple[str, int], ...] = ()

    def subsets(self) -> list[Mapping[str, Any]]:
        """The DestinationRule's subsets (``name``, ``labels``, ``trafficPolicy``), in order."""
        if self.destination_rule is None:
            return []
        return [s for s in self.destination_rule.spec.get("subsets") or [] if isinstance(s, Mapping)]

    def subset(self, name: str) -> Mapping[str, Any] | None:
        return next((s for s in self.subsets() if s.get("name") == name), None)


def _for_mesh(r: Resource) -> bool:
    gateways = r.spec.get("gateways") or []
    return not gateways or "mesh" in gateways


class PolicySnapshot:
    """The binding for one (policy, mesh) state, as a proxy in ``namespace`` sees it (``None``: any)."""

    def __init__(self, policy: PolicyModel, mesh: ServiceView, namespace: str | None = None,
                 base: PolicySnapshot | None = None) -> None:
        self.namespace = namespace
        self._policy = policy
        self._views: dict[str, PolicySnapshot] = {}
        self._candidates: dict[str, dict[str, list[Resource]]]
        self.hosts: HostIndex
        self._mesh: ServiceView
        if base is not None:
            self.hosts, self._mesh, self._candidates = base.hosts, base._mesh, base._candidates
        else:
            self.hosts = HostIndex(mesh)
            self._mesh = mesh
            self._candidates = {}
            for kind in _BOUND:
                for r in policy.resources(kind):
                    if kind == "VirtualService" and not _for_mesh(r):
                        continue
                    targets = [r.spec.get("host")] if kind == "DestinationRule" else r.spec.get("hosts") or []
                    for host in targets:
                        svc = self.hosts.service_for(str(host), r.namespace) if host else None
                        if svc is not None:
                            have = self._candidates.setdefault(svc, {}).setdefault(kind, [])
                            if not any(x is r for x in have):
                                have.append(r)
        self._by_service: dict[str, ServicePolicy] = {}
        self._http: dict[ResourceKey, tuple[Resource, list[Mapping[str, Any]]]] = {}
        services = self._mesh.services()
        for svc, kinds in self._candidates.items():
            service = services.get(svc)
            svc_ns = str(service.metadata.get(NAMESPACE_METADATA, DEFAULT_NAMESPACE)) if service else DEFAULT_NAMESPACE
            groups = {kind: chosen_group(kind, rs, namespace, svc_ns) for kind, rs in kinds.items()}
            chosen = {kind: merged(group) for kind, group in groups.items() if group}
            if not chosen:
                continue
            rev = tuple(sorted((str(r.key), policy.revision(r.key)) for group in groups.values() for r in group))
            self._by_service[svc] = ServicePolicy(svc, chosen.get("VirtualService"), chosen.get("DestinationRule"),
                                                  chosen.get("MetaRouter"), rev)

    def view(self, namespace: str | None) -> PolicySnapshot:
        """This binding as a proxy in ``namespace`` sees it (``None``: this one)."""
        if namespace is None or namespace == self.namespace:
            return self
        hit = self._views.get(namespace)
        if hit is None:
            hit = self._views[namespace] = PolicySnapshot(self._policy, self._mesh, namespace, self)
        return hit

    def for_service(self, name: str) -> ServicePolicy:
        return self._by_service.get(name) or ServicePolicy(name)

    def service_for(self, host: str, namespace: str = DEFAULT_NAMESPACE) -> str | None:
        return self.hosts.service_for(host, namespace)

    def http_of(self, vs: Resource) -> list[Mapping[str, Any]]:
        """``vs``'s ``http`` routes with delegation resolved (:mod:`.delegate`); a delegate must be
        exported to ``vs``'s namespace."""
        hit = self._http.get(vs.key)
        if hit is None or hit[0] is not vs:
            def lookup(namespace: str, name: str) -> Resource | None:
                for r in self._policy.resources("VirtualService", namespace):
                    if r.name == name and visible(r, vs.namespace):
                        return r
                return None

            hit = self._http[vs.key] = (vs, delegated_http(vs, lookup))
        return hit[1]

    def subset_labels(self, service: str, subset: str) -> Mapping[str, str] | None:
        s = self.for_service(service).subset(subset)
        return None if s is None else dict(s.get("labels") or {})


class AppliedPolicy:
    """Hands out the :class:`PolicySnapshot` of the current policy and mesh, rebuilt only when either changed."""

    def __init__(self, policy: PolicyModel, trust_domain: str = "cluster.local") -> None:
        self.policy = policy
        self.trust_domain = trust_domain  # the CA's: the SPIFFE ids policy and auto mTLS name
        self._snap: tuple[tuple[int, int], PolicySnapshot] | None = None
        self._scoped: tuple[int, bool] = (0, False)
        self._viewed: tuple[int, bool] = (0, False)

    def snapshot(self, mesh: Any) -> PolicySnapshot:
        key = (self.policy.index, int(mesh.index))
        if self._snap is None or self._snap[0] != key:
            self._snap = (key, PolicySnapshot(self.policy, mesh))
        return self._snap[1]

    def view(self, namespace: str) -> str | None:
        """The namespace a proxy's policy view depends on: ``None`` while no VirtualService,
        DestinationRule or MetaRouter exists (every proxy sees the same), else the proxy's
        (``default`` when its node names none)."""
        if self._viewed[0] != self.policy.index:
            some = any(self.policy.resources(kind) for kind in _SCOPED) or any(
                "*" not in (r.spec.get("exportTo") or ["*"]) for r in self.policy.resources("ServiceEntry"))
            self._viewed = (self.policy.index, some)
        return (namespace or DEFAULT_NAMESPACE) if self._viewed[1] else None

    def source_scoped(self) -> bool:
        """Whether some VirtualService route (http, tcp or tls) applies only to some nodes
        (``sourceLabels``, ``sourceNamespace``): routes then depend on the node's labels and namespace."""
        if self._scoped[0] != self.policy.index:
            scoped = any(m.get("sourceLabels") or m.get("sourceNamespace")
                         for r in self.policy.resources("VirtualService")
                         for kind in ("http", "tcp", "tls")
                         for h in r.spec.get(kind) or [] for m in h.get("match") or [])
            self._scoped = (self.policy.index, scoped)
        return self._scoped[1]


__all__ = ["ROOT_NAMESPACE", "AppliedPolicy", "PolicySnapshot", "ServicePolicy", "choose", "chosen_group",
           "merge_order", "merged", "service_visible", "visible"]
