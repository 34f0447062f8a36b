"""``sofamesh analyze``: what is accepted but will not work as written, like ``istioctl analyze``.

A route to a subset no DestinationRule defines, a subset that selects no instance, a subset name
two DestinationRules of one namespace and host both define, two VirtualServices for one host, a
host no registry knows, a Gateway server whose ``credentialName`` names no usable Secret, a
rejected document whose resource keeps its last accepted version, and every field no connected
proxy enforces yet. Reads the policy and mesh models; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sofamesh.core.net.secrets import CertificateSecret, TrustSecret
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.policy.applied import merge_order
from sofamesh.pilot.policy.credentials import CA_SUFFIX, secret_name, served
from sofamesh.pilot.policy.enforcement import unenforced
from sofamesh.pilot.policy.hosts import HostIndex, fqdn, subset_instances
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import Resource

ERROR, WARNING, INFO = "Error", "Warning", "Info"


@dataclass(frozen=True, slots=True)
class Finding:
    level: str
    code: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"{self.level} [{self.code}] ({self.resource}) {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "code": self.code, "resource": self.resource, "message": self.message}


class MeshView(Protocol):
    def services(self) -> Mapping[str, Service]: ...

    def instances(self, name: str) -> tuple[ServiceInstance, ...]: ...


def _ref(r: Resource) -> str:
    return f"{r.kind} {r.namespace}/{r.name}"


def _destinations(r: Resource) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, destination) of every destination and mirror of a VirtualService or MetaRouter."""
    spec = r.spec
    groups = [("http", "route"), ("tcp", "route"), ("tls", "route")] if r.kind == "VirtualService" else [
        ("routes", "route")]
    for section, field in groups:
        for i, rule in enumerate(spec.get(section) or []):
            for j, d in enumerate(rule.get(field) or []):
                if isinstance(d.get("destination"), Mapping):
                    yield f"spec.{section}[{i}].{field}[{j}].destination", d["destination"]
            if isinstance(rule.get("mirror"), Mapping):
                yield f"spec.{section}[{i}].mirror", rule["mirror"]
            for j, m in enumerate(rule.get("mirrors") or []):
                if isinstance(m.get("destination"), Mapping):
                    yield f"spec.{section}[{i}].mirrors[{j}].destination", m["destination"]


def analyze(policy: PolicyModel, mesh: MeshView) -> list[Finding]:
    hosts = HostIndex(mesh)
    out: list[Finding] = []

    def target(host: str, namespace: str) -> str:
        """What a host means: a service name when a registry knows it, else its FQDN."""
        return hosts.service_for(host, namespace) or fqdn(host, namespace)

    def unknown(r: Resource, host: str, path: str) -> None:
        if "*" not in host and hosts.service_for(host, r.namespace) is None:
            out.append(Finding(WARNING, "IST0101", _ref(r), f"Referenced host not found: {host!r} "
                                                            f"({fqdn(host, r.namespace)}) at {path}"))

    subsets: dict[str, set[str]] = {}
    for dr in policy.resources("DestinationRule"):
        host = str(dr.spec.get("host", ""))
        unknown(dr, host, "spec.host")
        svc = hosts.service_for(host, dr.namespace)
        for i, s in enumerate(dr.spec.get("subsets") or []):
            subsets.setdefault(target(host, dr.namespace), set()).add(str(s.get("name")))
            if svc is not None and not subset_instances(mesh.instances(svc), s.get("labels") or {}):
                out.append(Finding(WARNING, "SOFA0001", _ref(dr), f"subset {s.get('name')!r} (spec.subsets[{i}]) "
                                                                  f"selects no instance of service {svc!r}"))
    merging: dict[tuple[str, str], list[Resource]] = {}
    for dr in policy.resources("DestinationRule"):
        merging.setdefault((dr.namespace, target(str(dr.spec.get("host", "")), dr.namespace)), []).append(dr)
    for (_ns, host), group in sorted(merging.items()):
        taken: dict[str, Resource] = {}
        for dr in merge_order(group):
            for i, s in enumerate(dr.spec.get("subsets") or []):
                name = str(s.get("name"))
                first = taken.setdefault(name, dr)
                if first is not dr:
                    out.append(Finding(WARNING, "SOFA0003", _ref(dr), f"subset {name!r} (spec.subsets[{i}]) is "
                                       f"already defined by {_ref(first)} for host {host}: the DestinationRules are "
                                       "merged and this subset is ignored"))
    owners: dict[str, list[Resource]] = {}
    for r in [*policy.resources("VirtualService"), *policy.resources("MetaRouter")]:
        gateways = r.spec.get("gateways") or []
        for i, host in enumerate(r.spec.get("hosts") or []):
            unknown(r, host, f"spec.hosts[{i}]")
            if r.kind == "VirtualService" and (not gateways or "mesh" in gateways):
                owners.setdefault(target(host, r.namespace), []).append(r)
        for path, dest in _destinations(r):
            host = str(dest.get("host", ""))
            unknown(r, host, f"{path}.host")
            subset = dest.get("subset")
            if subset and subset not in subsets.get(target(host, r.namespace), set()):
                out.append(Finding(WARNING, "IST0101", _ref(r), f"Referenced host+subset in destinationrule not "
                                                                f"found: \"{host}+{subset}\" at {path}"))
    for host, vss in sorted(owners.items()):
        if len(vss) > 1:
            names = ", ".join(f"{v.namespace}/{v.name}" for v in vss)
            for v in vss:
                out.append(Finding(ERROR, "IST0109", _ref(v), f"The VirtualServices {names} associated with mesh "
                                                              f"define the same host or wildcard host {host}."))
    out += _gateway_credentials(policy)
    for rejected in policy.rejections():
        out.append(Finding(ERROR, "IST0106", rejected.ref, f"rejected document at {rejected.source.describe()} "
                                                           "(the last accepted version, if any, keeps serving): "
                           + "; ".join(str(i) for i in rejected.errors)))
    for r in policy.resources():
        fields = unenforced(r)
        if fields:
            out.append(Finding(INFO, "SOFA0002", _ref(r), "accepted and stored, but no connected proxy enforces "
                                                          f"these fields yet: {', '.join(fields)}"))
    return out


def _gateway_credentials(policy: PolicyModel) -> list[Finding]:
    """Istio's IST0161 InvalidGatewayCredential: a server's ``credentialName`` names no Secret with a
    certificate and key (or, for MUTUAL / OPTIONAL_MUTUAL, no client CA) in the Gateway's namespace,
    where this check assumes its gateway proxies run (Pilot serves a proxy the Secrets of its own)."""
    out = []
    for gw in policy.resources("Gateway"):
        secrets = served(policy.resources("Secret", gw.namespace))
        for i, server in enumerate(gw.spec.get("servers") or []):
            tls = server.get("tls") or {}
            mode = tls.get("mode") or "PASSTHROUGH"
            if not tls.get("credentialName") or mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
                continue
            name = secret_name(str(tls["credentialName"]))
            where = f"spec.servers[{i}].tls.credentialName"
            if not isinstance(secrets.get(name), CertificateSecret):
                out.append(Finding(ERROR, "IST0161", _ref(gw), f"{where}: no Secret {name!r} with tls.crt and "
                                   f"tls.key in namespace {gw.namespace}: the server is left out of gateways there"))
            elif mode != "SIMPLE" and not isinstance(secrets.get(name + CA_SUFFIX), TrustSecret):
                out.append(Finding(ERROR, "IST0161", _ref(gw), f"{where}: {mode} needs a client CA: ca.crt in "
                                   f"Secret {name!r} or a Secret {name}{CA_SUFFIX} in namespace {gw.namespace}"))
    return out


__all__ = ["ERROR", "INFO", "WARNING", "Finding", "analyze"]
