"""One service as ``sofamesh describe service`` and the dashboard show it: its instances per
registry (protocol, health), the policy resources that apply to it, and who calls it.

Read-only over a running Pilot (``PilotView``): the mesh model, each registry, the accepted policy
and the call graph. Which resources apply follows Istio: a VirtualService, ServiceEntry or MetaRouter
whose ``hosts`` name the service, a DestinationRule whose ``host`` does (short hosts resolve in the
resource's namespace); an AuthorizationPolicy, PeerAuthentication or RequestAuthentication in scope
for a workload serving it (``pilot/xds/workload_security.py``'s rule); a WorkloadEntry that made one
of its instances. Rejected documents that name the service as a host are listed with their errors.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from sofamesh.pilot.policy.hosts import NAMESPACE_METADATA, HostIndex
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE, Resource
from sofamesh.pilot.xds.workload_security import Workload, applies

if TYPE_CHECKING:
    from sofamesh.pilot.model import Service
    from sofamesh.pilot.view import PilotView

_HOSTS_KINDS = ("VirtualService", "ServiceEntry", "MetaRouter")
_SECURITY_KINDS = ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication")
POLICY_SOURCE = "policy"  # instances made by ServiceEntry / WorkloadEntry resources, not by a registry


def instances_by_registry(pilot: PilotView, name: str) -> list[dict[str, Any]]:
    """Each instance of ``name`` in the mesh model, with the registry that holds it."""
    owners: dict[str, str] = {}
    for reg in pilot.registries:
        for inst in reg.instances(name):
            owners.setdefault(inst.id, reg.name)
    return [{**inst.to_dict(), "registry": owners.get(inst.id, POLICY_SOURCE)} for inst in pilot.model.instances(name)]


def _namespace(svc: Service) -> str:
    return svc.metadata.get(NAMESPACE_METADATA, DEFAULT_NAMESPACE)


def _applies(r: Resource, name: str, hosts: HostIndex, workloads: list[Workload], instance_ids: set[str]) -> bool:
    spec = r.spec
    if r.kind in _HOSTS_KINDS:
        return any(isinstance(h, str) and hosts.service_for(h, r.namespace) == name for h in spec.get("hosts") or [])
    if r.kind == "DestinationRule":
        host = spec.get("host")
        return isinstance(host, str) and hosts.service_for(host, r.namespace) == name
    if r.kind in _SECURITY_KINDS:
        return any(applies(r, w) for w in workloads)
    if r.kind == "WorkloadEntry":
        ident = f"{r.name}.{r.namespace}"  # the instance ids its ServiceEntry made (policy/entries.py)
        return any(i == ident or i.startswith(ident + "-") for i in instance_ids)
    return False


def policies_for(pilot: PilotView, name: str) -> list[dict[str, Any]]:
    """The accepted policy resources that apply to service ``name``."""
    svc = pilot.model.service(name)
    if svc is None:
        return []
    hosts = HostIndex(pilot.model)
    ns = _namespace(svc)
    instances = pilot.model.instances(name)
    workloads = [Workload(ns, dict(i.labels), frozenset({name})) for i in instances] or [
        Workload(ns, {}, frozenset({name}))
    ]
    ids = {i.id for i in instances}
    return [
        {"kind": r.kind, "namespace": r.namespace, "name": r.name, "api_version": r.api_version}
        for r in pilot.policy.resources()
        if _applies(r, name, hosts, workloads, ids)
    ]


def _named_hosts(body: Any) -> list[tuple[str, str]]:
    """(host, namespace) pairs a policy document names, read leniently: it may be the invalid one."""
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        return []
    meta = body.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    ns = ns if isinstance(ns, str) and ns else DEFAULT_NAMESPACE
    spec = body["spec"]
    hosts = spec.get("hosts") if body.get("kind") in _HOSTS_KINDS else [spec.get("host")]
    return [(h, ns) for h in hosts or [] if isinstance(h, str)] if isinstance(hosts, list) else []


def rejected_for(pilot: PilotView, name: str) -> list[dict[str, Any]]:
    """The policy documents the store holds that were rejected and name service ``name`` as a host
    (``hosts`` / ``host``, short hosts resolved in the document's namespace), with their errors: a
    resource of them that was accepted before keeps its last accepted version."""
    rejected = {v.source: v for v in pilot.policy.rejections()}
    if not rejected:
        return []
    hosts = HostIndex(pilot.model)
    out = []
    for doc in pilot.config_store.documents():
        v = rejected.get(doc.source)
        if v is not None and any(hosts.service_for(h, ns) == name for h, ns in _named_hosts(doc.body)):
            out.append({"ref": v.ref, "source": v.source.describe(), "errors": [str(i) for i in v.errors]})
    return out


def callers(pilot: PilotView, name: str) -> list[dict[str, Any]]:
    return [e for e in pilot.traffic.edges() if e["destination"] == name]


def summary(pilot: PilotView, name: str) -> dict[str, Any]:
    """The services list of the dashboard: one service, its instances counted by registry and health."""
    svc = pilot.model.service(name)
    assert svc is not None
    insts = instances_by_registry(pilot, name)
    return {
        **svc.to_dict(),
        "instances": len(insts),
        "by_registry": dict(sorted(Counter(i["registry"] for i in insts).items())),
        "by_health": dict(sorted(Counter(str(i["health"]) for i in insts).items())),
    }


def describe_service(pilot: PilotView, name: str) -> dict[str, Any] | None:
    """``None`` when the mesh has no service ``name``."""
    svc = pilot.model.service(name)
    if svc is None:
        return None
    return {
        "service": svc.to_dict(),
        "instances": instances_by_registry(pilot, name),
        "policies": policies_for(pilot, name),
        "rejected": rejected_for(pilot, name),
        "callers": callers(pilot, name),
    }


__all__ = [
    "POLICY_SOURCE",
    "callers",
    "describe_service",
    "instances_by_registry",
    "policies_for",
    "rejected_for",
    "summary",
]
