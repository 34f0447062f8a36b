"""EtcdEntries: a served registry's shared entries (``shared_entries.py``) in etcd.

Key ``<prefix><service>/<instance id>``, the document as its value. A registration that can lapse
is put under an etcd lease of its own whose TTL is ``removal_after`` (``remove_after_s`` plus the
renewal granularity); each written renewal keeps the lease alive (and grants a new one when it ran
out meanwhile: the renewal registers it again). etcd deletes the key when the lease runs out, once,
whichever replicas are alive.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx

from sofamesh.core.errors import PluginError
from sofamesh.plugins.registries.etcd.prefix import EtcdPrefix, Events, KeyValues, b64, key_of, value_of
from sofamesh.plugins.registries.shared_entries import SharedEntries


class EtcdEntries(SharedEntries):
    kind = "etcd"

    def __init__(self, registry: str, endpoint: str, prefix: str, fraction: float = 0.5) -> None:
        super().__init__(registry, fraction)
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._etcd = EtcdPrefix(self.endpoint, self.prefix, f"registry {registry!r}")
        self._leases: dict[str, int] = {}  # key -> the etcd lease it is under
        self._held: set[str] = set()  # keys handed over

    def _key(self, service: str, instance_id: str) -> str:
        return f"{self.prefix}{service}/{instance_id}"

    async def _open(self) -> None:
        try:
            self._snapshot(await self._etcd.read())
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            await self._etcd.stop()
            raise PluginError(f"registry {self.registry!r}: etcd at {self.endpoint} is unreachable: {exc}") from exc
        self._etcd.follow(self._snapshot, self._events)

    async def _close(self) -> None:
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
            self._seen(service, instance_id, None)
            return
        lease = int(kv.get("lease", "0"))
        if lease:
            self._leases[key] = lease
        else:
            self._leases.pop(key, None)
        self._held.add(key)
        self._seen(service, instance_id, value_of(kv))

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

    # -- writing -------------------------------------------------------------------------------
    async def _write(self, op: str, service: str, instance_id: str, doc: dict[str, Any] | None) -> None:
        key = self._key(service, instance_id)
        if doc is None:
            await self._etcd.post("/v3/kv/deleterange", {"key": b64(key)})
            return
        lease = self._leases.get(key, 0) if op == "renew" else 0
        if lease:
            alive = await self._etcd.post("/v3/lease/keepalive", {"ID": str(lease)})
            if int(alive.get("result", {}).get("TTL", "0")) <= 0:
                lease = 0  # it ran out meanwhile: the renewal registers it again
        ttl = self.removal_after(doc)
        if not lease and ttl:
            granted = await self._etcd.post("/v3/lease/grant", {"TTL": str(max(2, math.ceil(ttl)))})
            lease = int(granted["ID"])
        body = {"key": b64(key), "value": b64(json.dumps(doc, sort_keys=True))}
        if lease:
            body["lease"] = str(lease)
            self._leases[key] = lease
        await self._etcd.post("/v3/kv/put", body)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "endpoint": self.endpoint,
            "prefix": self.prefix,
            "revision": self._etcd.revision,
            "leases": len(self._leases),
        }


__all__ = ["EtcdEntries"]
