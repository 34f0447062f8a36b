"""SharedEntries: the registrations a served registry API took (Eureka, Nacos, Consul clients) kept
in etcd, so every Pilot replica serving that API lists them, and a renewal through any replica
keeps them alive.

Key ``<prefix><service>/<instance id>``, value JSON: ``service``, ``instance`` (the model's
``to_dict`` forms, without ``origin``), ``lease_s``, ``remove_after_s``, ``wire`` (the API's own
record), ``registered_at`` and ``renewed_at`` (wall-clock seconds). As the etcd registry's
``leases: instance``: a registration that is dropped after missed renewals (``remove_after_s``) is
put under an etcd lease of its own with that TTL, which a renewal through any replica keeps alive
(and ``renewed_at`` is written again, so every replica marks it unhealthy at the same moment); etcd
deletes it when the lease runs out, once, whichever replicas are alive. The others stay until
removed. This module owns the etcd side only: what an entry means stays in ``served.py``.

Writes leave in order from one task: the API answers its client once its own replica applied the
change; the store and the other replicas follow (the watch, tens of milliseconds later).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import httpx

from sofamesh.core.errors import PluginError
from sofamesh.core.net.loop import cancel
from sofamesh.plugins.registries.etcd.prefix import EtcdPrefix, Events, KeyValues, b64, key_of, value_of

log = logging.getLogger("sofamesh.pilot.registry.served")
Apply = Callable[[str, str, "dict[str, Any] | None"], None]
"""Called with (service, instance id, document or ``None`` when it was removed)."""


class SharedEntries:
    """A served registry's entries under one etcd prefix; see the module docstring."""

    def __init__(self, registry: str, endpoint: str, prefix: str) -> None:
        self.registry = registry
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._etcd = EtcdPrefix(self.endpoint, self.prefix, f"registry {registry!r}")
        self._apply: Apply = lambda service, iid, doc: None
        self._queue: asyncio.Queue[tuple[str, str, str, dict[str, Any] | None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._leases: dict[str, int] = {}  # key -> the etcd lease it is under
        self._held: set[str] = set()  # keys handed to ``apply``
        self.writes = 0
        self.write_failures = 0

    def _key(self, service: str, instance_id: str) -> str:
        return f"{self.prefix}{service}/{instance_id}"

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, apply: Apply) -> None:
        """Read every entry (``apply`` for each), then follow the prefix and start the writer."""
        self._apply = apply
        try:
            self._snapshot(await self._etcd.read())
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            await self._etcd.stop()
            raise PluginError(f"registry {self.registry!r}: etcd at {self.endpoint} is unreachable: {exc}") from exc
        self._etcd.follow(self._snapshot, self._events)
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    async def stop(self) -> None:
        await cancel(self._writer)
        self._writer = None
        await self._etcd.stop()

    # -- reading -------------------------------------------------------------------------------
    def _one(self, kv: dict[str, Any], deleted: bool) -> None:
        key = key_of(kv)
        service, _, instance_id = key[len(self.prefix) :].partition("/")
        if not service or not instance_id:
            return
        if deleted:
            self._leases.pop(key, None)
            self._held.discard(key)
            self._apply(service, instance_id, None)
            return
        lease = int(kv.get("lease", "0"))
        if lease:
            self._leases[key] = lease
        else:
            self._leases.pop(key, None)
        try:
            doc = json.loads(value_of(kv))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            log.warning("registry %s: ignoring %s: %s", self.registry, key, exc)
            return
        self._held.add(key)
        self._apply(service, instance_id, doc)

    def _snapshot(self, kvs: KeyValues) -> None:
        present = {key_of(kv) for kv in kvs}
        for key in sorted(self._held - present):  # removed while the watch was down
            self._one({"key": b64(key)}, True)
        for kv in kvs:
            self._one(kv, False)

    def _events(self, events: Events) -> None:
        for ev in events:
            self._one(ev["kv"], ev.get("type") == "DELETE")

    async def fence(self) -> None:
        """A write the watch must deliver (``etcd/watch_fence.py``)."""
        try:
            await self._etcd.wait_fence()
        except httpx.HTTPError as exc:
            raise PluginError(f"registry {self.registry!r}: fence write to {self.endpoint} failed: {exc}") from exc

    # -- writing (in order, from one task) -----------------------------------------------------
    def put(self, service: str, instance_id: str, doc: dict[str, Any]) -> None:
        """A registration or a change of it: a new lease when it can lapse."""
        self._queue.put_nowait(("put", service, instance_id, doc))

    def renew(self, service: str, instance_id: str, doc: dict[str, Any]) -> None:
        """Keep its lease alive and record the renewal."""
        self._queue.put_nowait(("renew", service, instance_id, doc))

    def remove(self, service: str, instance_id: str) -> None:
        self._queue.put_nowait(("remove", service, instance_id, None))

    async def _write_forever(self) -> None:
        while True:
            op, service, instance_id, doc = await self._queue.get()
            try:
                await self._write(op, self._key(service, instance_id), doc)
                self.writes += 1
            except Exception as exc:  # one write that fails must not stop the ones after it
                self.write_failures += 1
                log.warning("registry %s: cannot %s %s/%s in etcd: %s", self.registry, op, service, instance_id, exc)

    async def _write(self, op: str, key: str, doc: dict[str, Any] | None) -> None:
        if doc is None:
            await self._etcd.post("/v3/kv/deleterange", {"key": b64(key)})
            return
        lease = self._leases.get(key, 0) if op == "renew" else 0
        if lease:
            alive = await self._etcd.post("/v3/lease/keepalive", {"ID": str(lease)})
            if int(alive.get("result", {}).get("TTL", "0")) <= 0:
                lease = 0  # it ran out meanwhile: the renewal registers it again
        ttl = doc.get("remove_after_s")
        if not lease and ttl:
            granted = await self._etcd.post("/v3/lease/grant", {"TTL": str(max(2, math.ceil(float(ttl))))})
            lease = int(granted["ID"])
        body = {"key": b64(key), "value": b64(json.dumps(doc, sort_keys=True))}
        if lease:
            body["lease"] = str(lease)
            self._leases[key] = lease
        await self._etcd.post("/v3/kv/put", body)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "etcd",
            "endpoint": self.endpoint,
            "prefix": self.prefix,
            "revision": self._etcd.revision,
            "writes": self.writes,
            "write_failures": self.write_failures,
            "leases": len(self._leases),
        }


__all__ = ["SharedEntries"]
