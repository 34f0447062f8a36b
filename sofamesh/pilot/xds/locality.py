"""DestinationRule ``localityLbSetting`` -> the priorities and locality weights of one proxy's EDS,
as Istio's locality load balancer writes them. Pure: instances and settings in, groups out.

An instance's locality is its registry labels' (:attr:`ServiceInstance.locality`); the proxy's is
its xDS node's ``locality``. A proxy without a locality gets the registry's grouping unchanged
(every locality at priority 0, weighted by its instances' weights), as Istio does.

- ``distribute``: the first entry whose ``from`` matches the proxy's locality gives each locality
  matching a ``to`` key that key's weight, split between the localities the key matches in
  proportion to their own weight (rounded up); a locality no key matches gets no traffic, nor one
  given weight 0 (Envoy accepts no locality weight of 0).
- failover, only when the cluster has ``outlierDetection`` (without it Envoy never leaves a
  priority, so Istio does not write one): priority 0 for the proxy's region/zone/sub-zone, 1 its
  region and zone, 2 its region, 3 elsewhere; a ``failover`` entry ``from`` the proxy's region
  keeps its ``to`` region at 3 and puts every other region at 4. ``failoverPriority`` (label
  names, or ``name=value``): an instance matching the proxy on the first N of them is at priority
  (count - N); with ``failover`` too, the locality order comes first, the label order within it.
  Priorities are then renumbered 0..n without gaps, as Envoy requires.
- Locality LB is on by default (Istio's mesh default): a DestinationRule with outlierDetection and
  no ``localityLbSetting`` fails over by locality; ``enabled: false`` turns it off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sofamesh.pilot.model import ServiceInstance

Locality = tuple[str, str, str]
_TOPOLOGY = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


@dataclass(slots=True)
class Group:
    """One ``LocalityLbEndpoints``: a locality's instances at one priority, and its weight."""

    locality: Locality
    priority: int
    weight: int
    instances: list[ServiceInstance]


def setting_of(policy: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``localityLbSetting`` in force for a cluster's effective policy (``{}``: Istio's default),
    ``None`` when turned off."""
    lb = policy.get("loadBalancer")
    setting = lb.get("localityLbSetting") if isinstance(lb, Mapping) else None
    if not isinstance(setting, Mapping):
        return {}
    return None if setting.get("enabled") is False else setting


def applies(policy: Mapping[str, Any]) -> bool:
    """Whether a cluster with this effective policy gets per-proxy EDS."""
    setting = setting_of(policy)
    if setting is None:
        return False
    return bool(setting.get("distribute")) or isinstance(policy.get("outlierDetection"), Mapping)


def locality_matches(locality: Locality, pattern: str) -> bool:
    """Istio's match of ``region[/zone[/subzone]]`` (``*`` matching anything) against a locality."""
    for want, have in zip(pattern.split("/"), locality, strict=False):
        if want == "*":
            return True
        if want != have:
            return False
    return True


def groups_by_locality(instances: Sequence[ServiceInstance]) -> list[Group]:
    by: dict[Locality, list[ServiceInstance]] = {}
    for inst in instances:
        by.setdefault(inst.locality, []).append(inst)
    return [Group(loc, 0, sum(i.weight for i in insts), insts) for loc, insts in sorted(by.items())]


def _distribute(groups: list[Group], proxy: Locality, rules: Sequence[Mapping[str, Any]]) -> list[Group]:
    rule = next((r for r in rules if locality_matches(proxy, str(r.get("from", "")))), None)
    if rule is None:
        return groups
    out: list[Group] = []
    left = list(groups)
    for pattern, weight in (rule.get("to") or {}).items():
        chosen = [g for g in left if locality_matches(g.locality, str(pattern))]
        left = [g for g in left if g not in chosen]
        total = sum(g.weight for g in chosen)
        for g in chosen:
            w = math.ceil(g.weight * int(weight) / total) if total else 0
            if w > 0:
                out.append(Group(g.locality, 0, w, g.instances))
    return out


def _locality_priority(proxy: Locality, loc: Locality, failover: Sequence[Mapping[str, Any]]) -> int:
    if proxy[0] == loc[0]:
        return 0 if proxy[1:] == loc[1:] else 1 if proxy[1] == loc[1] else 2
    for rule in failover:
        if rule.get("from") == proxy[0]:
            return 3 if loc[0] == rule.get("to") else 4
    return 3


def _with_locality_labels(labels: Mapping[str, str], locality: Locality) -> dict[str, str]:
    out = {k: v for k, v in zip(_TOPOLOGY, locality, strict=True) if v}
    out.update(labels)
    return out


def _label_priority(keys: Sequence[str], proxy_labels: Mapping[str, str], inst: ServiceInstance) -> int:
    labels = _with_locality_labels(inst.labels, inst.locality)
    matched = 0
    for key in keys:
        name, eq, value = key.partition("=")
        want = value if eq else proxy_labels.get(name)
        if want is None or labels.get(name) != want:
            break
        matched += 1
    return len(keys) - matched


def _failover(
    groups: list[Group], proxy: Locality, proxy_labels: Mapping[str, str], setting: Mapping[str, Any]
) -> list[Group]:
    keys = [str(k) for k in setting.get("failoverPriority") or []]
    rules = [r for r in setting.get("failover") or [] if isinstance(r, Mapping)]
    labels = _with_locality_labels(proxy_labels, proxy)
    ranked: dict[tuple[Locality, tuple[int, int]], list[ServiceInstance]] = {}
    for g in groups:
        by_locality = 0 if keys and not rules else _locality_priority(proxy, g.locality, rules)
        for inst in g.instances:
            rank = (by_locality, _label_priority(keys, labels, inst) if keys else 0)
            ranked.setdefault((g.locality, rank), []).append(inst)
    order = {rank: i for i, rank in enumerate(sorted({rank for _loc, rank in ranked}))}
    return [
        Group(loc, order[rank], sum(i.weight for i in insts), insts)
        for (loc, rank), insts in sorted(ranked.items(), key=lambda kv: (order[kv[0][1]], kv[0][0]))
    ]


def locality_groups(
    instances: Sequence[ServiceInstance], policy: Mapping[str, Any], proxy: Locality, proxy_labels: Mapping[str, str]
) -> list[Group]:
    """The ``LocalityLbEndpoints`` of a cluster with effective ``policy``, for a proxy at ``proxy``."""
    groups = groups_by_locality(instances)
    setting = setting_of(policy)
    if setting is None or not any(proxy):
        return groups
    if setting.get("distribute"):
        return _distribute(groups, proxy, [d for d in setting["distribute"] if isinstance(d, Mapping)])
    if isinstance(policy.get("outlierDetection"), Mapping):
        return _failover(groups, proxy, proxy_labels, setting)
    return groups


def failover_label_keys(specs: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """The label names any ``failoverPriority`` of these DestinationRule specs reads from the proxy."""
    keys: set[str] = set()

    def visit(policy: Any) -> None:
        if not isinstance(policy, Mapping):
            return
        for p in (policy, *[pls for pls in policy.get("portLevelSettings") or [] if isinstance(pls, Mapping)]):
            lb = p.get("loadBalancer")
            setting = lb.get("localityLbSetting") if isinstance(lb, Mapping) else None
            if isinstance(setting, Mapping):
                keys.update(str(k) for k in setting.get("failoverPriority") or [] if "=" not in str(k))

    for spec in specs:
        visit(spec.get("trafficPolicy"))
        for subset in spec.get("subsets") or []:
            if isinstance(subset, Mapping):
                visit(subset.get("trafficPolicy"))
    return frozenset(keys)


__all__ = [
    "Group",
    "applies",
    "failover_label_keys",
    "groups_by_locality",
    "locality_groups",
    "locality_matches",
    "setting_of",
]
