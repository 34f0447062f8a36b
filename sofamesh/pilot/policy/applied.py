"""Which accepted policy applies to which service of the mesh model: the binding xDS generation reads.

For each service: the VirtualService, DestinationRule and MetaRouter whose host names it (hosts
resolve as in :mod:`sofamesh.pilot.policy.hosts`: a short host in the resource's namespace). As
in Istio, one resource of a kind binds a host: the first by namespace and name wins (``sofamesh
analyze`` reports the others as IST0109); a VirtualService bound to gateways only (no ``mesh``)
is not for sidecars. A :class:`PolicySnapshot` is computed from one (policy index, mesh index)
pair and never changes; :class:`AppliedPolicy` hands out the current one. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sofamesh.pilot.policy.hosts import HostIndex, ServiceView
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE, Resource

_BOUND = ("VirtualService", "DestinationRule", "MetaRouter")


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
    """The binding for one (policy, mesh) state."""

    def __init__(self, policy: PolicyModel, mesh: ServiceView) -> None:
        self.hosts = HostIndex(mesh)
        self._mesh = mesh
        bound: dict[str, dict[str, Resource]] = {}
        for kind in _BOUND:
            for r in policy.resources(kind):
                if kind == "VirtualService" and not _for_mesh(r):
                    continue
                targets = [r.spec.get("host")] if kind == "DestinationRule" else r.spec.get("hosts") or []
                for host in targets:
                    svc = self.hosts.service_for(str(host), r.namespace) if host else None
                    if svc is not None:
                        bound.setdefault(svc, {}).setdefault(kind, r)
        self._by_service: dict[str, ServicePolicy] = {}
        for svc, kinds in bound.items():
            rev = tuple(sorted((str(r.key), policy.revision(r.key)) for r in kinds.values()))
            self._by_service[svc] = ServicePolicy(svc, kinds.get("VirtualService"), kinds.get("DestinationRule"),
                                                  kinds.get("MetaRouter"), rev)

    def for_service(self, name: str) -> ServicePolicy:
        return self._by_service.get(name) or ServicePolicy(name)

    def service_for(self, host: str, namespace: str = DEFAULT_NAMESPACE) -> str | None:
        return self.hosts.service_for(host, namespace)

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

    def snapshot(self, mesh: Any) -> PolicySnapshot:
        key = (self.policy.index, int(mesh.index))
        if self._snap is None or self._snap[0] != key:
            self._snap = (key, PolicySnapshot(self.policy, mesh))
        return self._snap[1]

    def source_scoped(self) -> bool:
        """Whether some VirtualService route applies only to some nodes (``sourceLabels``,
        ``sourceNamespace``): route configs then depend on the node's labels and namespace."""
        if self._scoped[0] != self.policy.index:
            scoped = any(m.get("sourceLabels") or m.get("sourceNamespace")
                         for r in self.policy.resources("VirtualService")
                         for h in r.spec.get("http") or [] for m in h.get("match") or [])
            self._scoped = (self.policy.index, scoped)
        return self._scoped[1]


__all__ = ["AppliedPolicy", "PolicySnapshot", "ServicePolicy"]
