"""Host set: which of a cluster's endpoints a balancer may choose from, by Envoy's rules for
priorities, localities, health and panic. Recomputed when endpoints or their health change, never
per request; a cluster whose endpoints are all healthy at one priority without locality weighting
has no plan at all (``build_plan`` returns None) and its requests never come here.

Envoy's rules (its "Priority levels", "Locality weighted load balancing" and "Panic threshold"):

- a priority's health is ``min(100, healthy x overprovisioning_factor / total)`` (integer percent,
  the factor in percent, default 140); the normalized total health is the sum capped at 100;
- the priority load gives each priority ``health x 100 / normalized total`` percent in order, at
  most what is left, and the rounding remainder to the first priority with any health;
- EDS ``degraded`` endpoints form a tier of their own: their availability (as health, counted
  over degraded endpoints) takes only the load healthy availability leaves;
- a priority is in panic when the total is under 100 and under ``healthy_panic_threshold`` percent
  of its endpoints are healthy: it then serves from all of its endpoints; when every priority is in
  panic the load follows the number of endpoints in each; with no health at all P0 takes it all;
- with locality weighting, a locality's effective weight is its weight x ``min(1, factor x healthy /
  total)``; a request picks a locality by effective weight, then the balancer picks among its
  healthy endpoints (a panicking priority ignores localities).

Zone-aware routing (``zone_aware_lb_config``: preferring the caller's own zone) is computed by
``zone_aware.py`` for priority 0 when the cluster asks for it (``zones``); with
``fail_traffic_on_panic`` a priority in panic serves no endpoint instead of all of them.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sofamesh.core.upstream.zone_aware import ZoneInput, ZoneRouting, plan_zones

if TYPE_CHECKING:
    from sofamesh.core.endpoint import Endpoint


class Level:
    """One priority's share of the load and what it serves from."""

    __slots__ = ("candidates", "degraded", "loc_cum", "loc_total", "localities", "panic", "priority", "zones")

    def __init__(self, priority: int, candidates: list[Endpoint], panic: bool,
                 localities: list[tuple[list[Endpoint], float]] | None, zones: ZoneRouting | None = None,
                 degraded: bool = False) -> None:
        self.priority = priority
        self.degraded = degraded  # the priority's degraded tier
        self.zones = zones
        self.candidates = candidates
        self.panic = panic
        self.localities: list[list[Endpoint]] = []
        cum: list[float] = []
        acc = 0.0
        for eps, w in localities or ():
            if w > 0 and eps:
                acc += w
                cum.append(acc)
                self.localities.append(eps)
        self.loc_cum = cum
        self.loc_total = acc

    def pick(self, hash: int | None) -> list[Endpoint]:
        """The endpoints this request may go to: one locality's healthy ones, or every candidate."""
        if self.zones is not None and hash is None:
            return self.zones.pick(self.candidates)
        if not self.localities:
            return self.candidates
        x = (hash % 1_000_003 / 1_000_003 if hash is not None else random.random()) * self.loc_total
        return self.localities[min(bisect_right(self.loc_cum, x), len(self.localities) - 1)]


class Plan:
    """Per priority with any load: its cumulative load (percent) and its ``Level``."""

    __slots__ = ("cum", "levels", "loads")

    def __init__(self, levels: list[Level], loads: list[int]) -> None:
        self.levels = levels
        self.loads = loads
        acc = 0
        cum = []
        for load in loads:
            acc += load
            cum.append(acc)
        self.cum = cum

    def level(self, hash: int | None) -> Level:
        if len(self.levels) == 1:
            return self.levels[0]
        r = hash % 100 if hash is not None else random.randrange(100)
        return self.levels[min(bisect_right(self.cum, r), len(self.levels) - 1)]

    def describe(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for lv, load in zip(self.levels, self.loads, strict=True):
            row: dict[str, object] = {"priority": lv.priority, "load": load, "panic": lv.panic,
                                      "candidates": len(lv.candidates)}
            if lv.zones is not None:
                row["zone_routing"] = lv.zones.describe()
            if lv.degraded:
                row["degraded"] = True
            out.append(row)
        return out


def priority_loads(healths: Sequence[int]) -> list[int]:
    """Envoy's priority load from each priority's health (percent); [100, 0, ...] with no health."""
    return tiered_loads(healths, [0] * len(healths))[0]


def tiered_loads(healths: Sequence[int], degradeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """Envoy's healthy and degraded priority loads: the load goes by healthy availability first,
    what is left by degraded availability, both normalized by their capped sum; the rounding
    remainder to the first priority with healthy (else degraded) availability."""
    n = len(healths)
    loads, dloads = [0] * n, [0] * n
    total = min(100, sum(healths) + sum(degradeds))
    if total == 0:
        if loads:
            loads[0] = 100
        return loads, dloads
    left = 100
    for i, h in enumerate(healths):
        loads[i] = min(left, h * 100 // total)
        left -= loads[i]
    for i, d in enumerate(degradeds):
        dloads[i] = min(left, d * 100 // total)
        left -= dloads[i]
    if left:
        first = next((i for i, h in enumerate(healths) if h > 0), None)
        if first is not None:
            loads[first] += left
        else:
            dloads[next(i for i, d in enumerate(degradeds) if d > 0)] += left
    return loads, dloads


def build_plan(endpoints: Sequence[Endpoint], panic_threshold: float, overprovisioning: int,
               locality_weighted: bool, zones: ZoneInput | None = None) -> Plan | None:
    """The plan for ``endpoints`` as they are now; None when there is nothing to plan (every
    endpoint healthy, one priority, no locality weighting or zone routing): the caller then
    balances over all."""
    by_priority: dict[int, list[Endpoint]] = {}
    all_healthy = True
    for e in endpoints:
        by_priority.setdefault(e.priority, []).append(e)
        if all_healthy and not e.healthy:
            all_healthy = False
    if not endpoints or (all_healthy and len(by_priority) == 1 and not locality_weighted and zones is None):
        return None
    top = max(by_priority)
    groups = [by_priority.get(p, []) for p in range(top + 1)]  # a priority with no endpoint has no health
    healthy = [[e for e in g if e.healthy] for g in groups]
    degraded = [[e for e in g if e.degraded] for g in groups]
    healths = [min(100, len(h) * overprovisioning // len(g)) if g else 0 for g, h in zip(groups, healthy, strict=True)]
    degradeds = [min(100, len(d) * overprovisioning // len(g)) if g else 0
                 for g, d in zip(groups, degraded, strict=True)]
    total = min(100, sum(healths) + sum(degradeds))
    panics = [total < 100 and (not g or 100.0 * (len(h) + len(d)) / len(g) < panic_threshold)
              for g, h, d in zip(groups, healthy, degraded, strict=True)]
    dloads = [0] * len(groups)
    if total == 0 or all(panics):
        n = sum(len(g) for g in groups)
        if panic_threshold == 0:  # panic disabled: no endpoint to serve from at all
            loads = priority_loads(healths)
        else:
            loads = [len(g) * 100 // n for g in groups]
            left = 100 - sum(loads)
            loads[next(i for i, g in enumerate(groups) if g)] += left
        panics = [panic_threshold > 0] * len(groups)
    else:
        loads, dloads = tiered_loads(healths, degradeds)
    levels: list[Level] = []
    kept: list[int] = []
    for p, (g, h, panic, load) in enumerate(zip(groups, healthy, panics, loads, strict=True)):
        if panic:
            load += dloads[p]  # a priority in panic serves from all of its endpoints
        if load > 0:
            cands = g if panic else h
            if panic and zones is not None and zones.fail_on_panic:
                cands = []  # fail_traffic_on_panic: as if no endpoint were healthy
            locs = _localities(g, overprovisioning) if locality_weighted and not panic else None
            zr = None
            if p == 0 and zones is not None and not panic and not locality_weighted and not zones.local_panic:
                zr = plan_zones(g, zones.local_counts, zones.local_zone, zones.min_cluster_size, zones.enabled)
            levels.append(Level(p, cands, panic, locs, zr))
            kept.append(load)
        if not panic and dloads[p] > 0:  # the degraded tier: what healthy endpoints could not take
            levels.append(Level(p, degraded[p], False, None, degraded=True))
            kept.append(dloads[p])
    if not levels:
        levels, kept = [Level(0, [], False, None)], [100]
    return Plan(levels, kept)


def _localities(group: list[Endpoint], overprovisioning: int) -> list[tuple[list[Endpoint], float]]:
    by_loc: dict[tuple[str, str, str], list[Endpoint]] = {}
    for e in group:
        by_loc.setdefault(e.locality, []).append(e)
    out = []
    for eps in by_loc.values():
        weight = max(e.locality_weight for e in eps)
        healthy = [e for e in eps if e.healthy]
        availability = min(1.0, overprovisioning / 100.0 * len(healthy) / len(eps))
        out.append((healthy, weight * availability))
    return out


__all__ = ["Level", "Plan", "build_plan", "priority_loads", "tiered_loads"]
