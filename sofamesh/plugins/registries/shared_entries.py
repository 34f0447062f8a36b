"""SharedEntries: the registrations a served registry API took (Eureka, Nacos, Consul clients) kept
in a store every Pilot replica follows (etcd: ``etcd/entries.py``; ZooKeeper:
``zookeeper/entries.py``), so every replica serving that API lists them, and a renewal through any
replica keeps them alive.

One document per registration under ``<prefix><service>/<instance id>``, JSON: ``service``,
``instance`` (the model's ``to_dict`` forms, without ``origin``), ``lease_s``, ``remove_after_s``,
``wire`` (the API's own record), ``registered_at`` and ``renewed_at`` (wall-clock seconds) and
``writer`` (the replica that wrote it). A registration that is dropped after missed renewals
(``remove_after_s``) is removed by the store once nobody renews it (an etcd lease; a reaper elected
among the replicas for ZooKeeper), once, whichever replicas are alive. The others stay until removed.
What an entry means stays in ``served.py``.

Renewals are cheap to take and dear to write (Nacos beats every 5 s): a renewal that changes
nothing but ``renewed_at`` is written only once the stored ``renewed_at`` is ``granularity`` old,
a fraction (``renew_write_fraction``, default 0.5) of the shorter of ``lease_s`` and
``remove_after_s`` (Kubernetes' node heartbeats work the same way: a lease renewed at a fraction of
its duration, the status written only when it changed). The store's ``renewed_at`` is then up to
``granularity`` older than the last renewal, so a replica that did not write a document takes the
latest renewal it allows (``renewed_at + granularity``), and the store removes a lapsed registration
``remove_after_s + granularity`` after its stored renewal: a lapse is never seen early, and at most
``granularity`` late on a replica that did not take the last renewal.

Writes leave in order from one task: the API answers its client once its own replica applied the
change; the store and the other replicas follow (the watch, tens of milliseconds later).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from sofamesh.core.net.loop import cancel

log = logging.getLogger("sofamesh.pilot.registry.served")
Apply = Callable[[str, str, "dict[str, Any] | None"], None]
"""Called with (service, instance id, document or ``None`` when it was removed)."""
_UNCOMPARED = ("renewed_at", "registered_at", "writer")


def granularity(doc: dict[str, Any], fraction: float) -> float | None:
    """How old the stored renewal may get before a renewal is written; ``None``: no deadline."""
    spans = [float(doc[k]) for k in ("lease_s", "remove_after_s") if doc.get(k)]
    return fraction * min(spans) if spans else None


class SharedEntries:
    """A served registry's entries in one shared store; see the module docstring. A store's class
    reads (``_open``: the entries now, then their changes, each through :meth:`_seen`), writes
    (``_write``), closes (``_close``) and fences."""

    kind = ""

    def __init__(self, registry: str, fraction: float = 0.5) -> None:
        self.registry = registry
        self.fraction = fraction
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._apply: Apply = lambda service, iid, doc: None
        self._queue: asyncio.Queue[tuple[str, str, str, dict[str, Any] | None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        # (service, id) -> (renewed_at, the rest) of what the store holds, or will once the queue is written
        self._stored: dict[tuple[str, str], tuple[float, str]] = {}
        self.writes = 0
        self.write_failures = 0
        self.renewals_unwritten = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, apply: Apply) -> None:
        """Read every entry (``apply`` for each), then follow the store and start the writer."""
        self._apply = apply
        await self._open()
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    async def stop(self) -> None:
        await cancel(self._writer)
        self._writer = None
        await self._close()

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def fence(self) -> None:
        """Return once every change written to the store before the call has been seen."""
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------------
    def _seen(self, service: str, instance_id: str, raw: bytes | None) -> dict[str, Any] | None:
        """An entry as the store holds it now (``None``: removed there); its document if it has one."""
        if raw is None:
            self._stored.pop((service, instance_id), None)
            self._apply(service, instance_id, None)
            return None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            log.warning("registry %s: ignoring the shared entry %s/%s: %s", self.registry, service, instance_id, exc)
            return None
        self._stored[(service, instance_id)] = _stamp(doc)
        self._apply(service, instance_id, doc)
        return doc

    def slack(self, doc: dict[str, Any]) -> float:
        """How much later than its ``renewed_at`` a document's registration may have been renewed."""
        if doc.get("writer") == self.identity:
            return 0.0  # our own: this replica knows each renewal it took
        return granularity(doc, self.fraction) or 0.0

    # -- writing (in order, from one task) -----------------------------------------------------
    def put(self, service: str, instance_id: str, doc: dict[str, Any]) -> None:
        """A registration or a change of it."""
        self._enqueue("put", service, instance_id, doc)

    def renew(self, service: str, instance_id: str, doc: dict[str, Any]) -> None:
        """Record a renewal (or a change of what is registered); one that moves only ``renewed_at``
        by less than the granularity is not written."""
        stored = self._stored.get((service, instance_id))
        renewed, rest = _stamp(doc)
        if stored is not None and stored[1] == rest:
            step = granularity(doc, self.fraction)
            if step is None or renewed - stored[0] < step:
                self.renewals_unwritten += 1
                return
        self._enqueue("renew", service, instance_id, doc)

    def remove(self, service: str, instance_id: str) -> None:
        self._stored.pop((service, instance_id), None)
        self._queue.put_nowait(("remove", service, instance_id, None))

    def _enqueue(self, op: str, service: str, instance_id: str, doc: dict[str, Any]) -> None:
        doc = {**doc, "writer": self.identity}
        self._stored[(service, instance_id)] = _stamp(doc)
        self._queue.put_nowait((op, service, instance_id, doc))

    async def _write_forever(self) -> None:
        while True:
            op, service, instance_id, doc = await self._queue.get()
            try:
                await self._write(op, service, instance_id, doc)
                self.writes += 1
            except Exception as exc:  # one write that fails must not stop the ones after it
                self.write_failures += 1
                log.warning(
                    "registry %s: cannot %s %s/%s in %s: %s", self.registry, op, service, instance_id, self.kind, exc
                )

    async def _write(self, op: str, service: str, instance_id: str, doc: dict[str, Any] | None) -> None:
        """``put`` / ``renew`` (a renewal may find the entry gone from the store: it is written
        again) or ``remove`` (``doc`` is ``None``)."""
        raise NotImplementedError

    def removal_after(self, doc: dict[str, Any]) -> float | None:
        """How long after a write the store removes the entry when nobody writes it again."""
        ttl = doc.get("remove_after_s")
        return float(ttl) + (granularity(doc, self.fraction) or 0.0) if ttl else None

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "writes": self.writes,
            "write_failures": self.write_failures,
            "renewals_unwritten": self.renewals_unwritten,
            "renew_write_fraction": self.fraction,
        }


def _stamp(doc: dict[str, Any]) -> tuple[float, str]:
    """A document's renewal time, and the rest of it in one comparable form (JSON, as stored)."""
    rest = json.dumps({k: v for k, v in doc.items() if k not in _UNCOMPARED}, sort_keys=True)
    return float(doc.get("renewed_at") or 0.0), rest


__all__ = ["Apply", "SharedEntries", "granularity"]
