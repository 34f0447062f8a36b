"""Registry sync: copies instances between registries along configured pairs ``from -> to``.

Rules (docs/pilot.md, "Registry sync"):

- An instance is *native* to the registry it was registered in; a *copy* carries the label
  ``sofamesh.source`` naming the registry it is native to. Only natives are ever copied, so a
  two-way pair (or a cycle) never loops: copies are a pure function of the natives.
- A registry receives the natives of every registry that reaches it through the pairs (chains
  included: with ``zk <-> etcd <-> embedded`` a ZooKeeper native reaches embedded too).
- A copy keeps the native's id, address, port, weight, version, group, health and labels; the
  label ``sofamesh.sync`` holds a fingerprint of those, so a copy is rewritten only when its
  native changed, and deleted when its native is gone (deletion propagates).
- Conflicts: a native is never overwritten by a copy; when two sources have a native with the
  same service and id, the one whose registry comes first in Pilot's ``registries`` list wins.
- The owner of a copy is its source: changing or deleting a copy elsewhere is undone by the next
  pass. A stale source (registry in an outage) keeps its copies where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sofamesh.core.errors import ConfigError, MeshError
from sofamesh.core.net.loop import cancel
from sofamesh.pilot.model import SOURCE_LABEL, Service, ServiceInstance
from sofamesh.pilot.registry import Registry

log = logging.getLogger("sofamesh.pilot.sync")
SYNC_LABEL = "sofamesh.sync"


def source_of(inst: ServiceInstance, registry: str) -> str:
    """The registry an instance is native to."""
    return inst.labels.get(SOURCE_LABEL) or registry


def fingerprint(source: str, inst: ServiceInstance) -> str:
    labels = {k: v for k, v in inst.labels.items() if k not in (SOURCE_LABEL, SYNC_LABEL)}
    doc = [source, inst.address, inst.port, inst.weight, inst.version, inst.group, inst.health.value,
           sorted(labels.items())]
    return hashlib.sha1(json.dumps(doc).encode()).hexdigest()[:16]


def copy_of(source: str, inst: ServiceInstance) -> ServiceInstance:
    labels = {**inst.labels, SOURCE_LABEL: source, SYNC_LABEL: fingerprint(source, inst)}
    return ServiceInstance(service=inst.service, id=inst.id, address=inst.address, port=inst.port,
                           weight=inst.weight, labels=labels, version=inst.version, group=inst.group,
                           health=inst.health)


@dataclass(frozen=True, slots=True)
class Pair:
    source: str
    target: str
    two_way: bool = False


@dataclass(slots=True)
class TargetStatus:
    copies: int = 0
    written: int = 0
    deleted: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass(slots=True)
class SyncStatus:
    passes: int = 0
    last_pass_at: float = 0.0
    last_lag_ms: float = 0.0
    max_lag_ms: float = 0.0
    targets: dict[str, TargetStatus] = field(default_factory=dict)


def sources_by_target(registries: Sequence[str], pairs: Iterable[Pair]) -> dict[str, list[str]]:
    """For each target, every registry that reaches it through the pairs, in registry order."""
    edges: dict[str, set[str]] = {name: set() for name in registries}
    for pair in pairs:
        for end in (pair.source, pair.target):
            if end not in edges:
                raise ConfigError("sync", f"unknown registry {end!r} (known: {', '.join(registries)})")
        edges[pair.source].add(pair.target)
        if pair.two_way:
            edges[pair.target].add(pair.source)
    reach: dict[str, list[str]] = {}
    for start in registries:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        for target in seen - {start}:
            reach.setdefault(target, []).append(start)
    order = {name: i for i, name in enumerate(registries)}
    return {t: sorted(s, key=order.__getitem__) for t, s in reach.items()}


async def _attempt(st: TargetStatus, op: Awaitable[object], what: str) -> bool:
    """Run one write; a failure is counted and retried by a later pass."""
    try:
        await op
    except MeshError as exc:
        st.errors += 1
        st.last_error = f"{what}: {exc}"
        log.warning("sync: cannot %s: %s", what, exc)
        return False
    return True


class RegistrySync:
    """Keeps the copies in every target equal to the natives of its sources."""

    def __init__(self, registries: Sequence[Registry], pairs: Sequence[Pair], resync_interval_s: float = 5.0,
                 settle_s: float = 0.05) -> None:
        self.registries = {r.name: r for r in registries}
        self.pairs = tuple(pairs)
        self.plan = sources_by_target([r.name for r in registries], pairs)
        for target in self.plan:
            if not self.registries[target].writable:
                raise ConfigError("sync", f"registry {target!r} is a sync target but is read-only")
        self.status = SyncStatus(targets={t: TargetStatus() for t in self.plan})
        self._resync = resync_interval_s
        self._settle = settle_s
        self._dirty: set[str] = set()
        self._dirty_since: float | None = None
        self._all = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def mark(self, names: Iterable[str]) -> None:
        """Services changed somewhere (a model listener): reconcile them soon."""
        self._dirty.update(names)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._resync)
            self._wake.clear()
            await asyncio.sleep(self._settle)
            since, self._dirty_since = self._dirty_since, None
            names, self._dirty = self._dirty, set()
            if self._all or not names:  # the periodic pass, or the first one
                self._all = False
                names = set()
                for reg in self.registries.values():
                    names.update(reg.services())
            try:
                await self.reconcile(names)
            except Exception:
                log.exception("registry sync pass failed")
            self._record(since)

    def _record(self, since: float | None) -> None:
        now = time.monotonic()
        self.status.passes += 1
        self.status.last_pass_at = time.time()
        if since is not None:
            lag = (now - since) * 1000
            self.status.last_lag_ms = round(lag, 1)
            self.status.max_lag_ms = round(max(self.status.max_lag_ms, lag), 1)

    async def reconcile(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            for target, sources in self.plan.items():
                await self._reconcile_one(name, self.registries[target], sources)
        for target in self.plan:
            reg = self.registries[target]
            self.status.targets[target].copies = sum(
                1 for n in reg.services() for i in reg.instances(n) if source_of(i, target) != target)

    async def _reconcile_one(self, name: str, target: Registry, sources: list[str]) -> None:
        desired: dict[str, tuple[Service, ServiceInstance]] = {}
        stale_sources: set[str] = set()
        for src_name in sources:
            src = self.registries[src_name]
            if src.stale:
                stale_sources.add(src_name)
            svc = src.services().get(name)
            if svc is None:
                continue
            for inst in src.instances(name):
                if source_of(inst, src_name) == src_name and inst.id not in desired:
                    desired[inst.id] = (svc, copy_of(src_name, inst))
        current = {i.id: i for i in target.instances(name)}
        st = self.status.targets[target.name]
        for inst_id, (svc, want) in desired.items():
            have = current.get(inst_id)
            if have is not None and source_of(have, target.name) == target.name:
                continue  # the target's own native wins in the target
            if have is not None and have.labels.get(SYNC_LABEL) == want.labels[SYNC_LABEL]:
                continue
            if await _attempt(st, target.register(svc, want), f"write {target.name}:{name}/{inst_id}"):
                st.written += 1
        for inst_id, have in current.items():
            owner = source_of(have, target.name)
            if owner == target.name or inst_id in desired or owner in stale_sources:
                continue
            if owner in self.registries and owner not in sources:
                continue  # a copy some other sync (or Pilot) does not own here
            if await _attempt(st, target.deregister(name, inst_id), f"delete {target.name}:{name}/{inst_id}"):
                st.deleted += 1

    def describe(self) -> dict[str, Any]:
        s = self.status
        return {"pairs": [{"from": p.source, "to": p.target, "two_way": p.two_way} for p in self.pairs],
                "sources": self.plan, "passes": s.passes, "last_pass_at": s.last_pass_at,
                "last_lag_ms": s.last_lag_ms, "max_lag_ms": s.max_lag_ms, "pending": len(self._dirty),
                "targets": {t: {"copies": ts.copies, "written": ts.written, "deleted": ts.deleted,
                                "errors": ts.errors, "last_error": ts.last_error,
                                "stale": self.registries[t].stale}
                            for t, ts in s.targets.items()}}


__all__ = ["SYNC_LABEL", "Pair", "RegistrySync", "copy_of", "fingerprint", "source_of", "sources_by_target"]
