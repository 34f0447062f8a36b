"""Which instances run a sidecar, learned from the sidecars that connect: a proxy holding a
workload certificate (node metadata ``sofamesh.mtls: true``) that names its instances
(``sofamesh.instances``, or ``INSTANCE_IPS``) makes those instances meshed, as Istio's injector
labels a pod ``security.istio.io/tlsMode: istio``. The mesh model lays the labels over the
instances it merges (:meth:`labels_for`), so auto mTLS and EDS ``tlsMode`` metadata follow.

The identity the instances run as (``sofamesh.io/service-account`` / ``sofamesh.io/namespace``,
what auto mTLS checks on them) is the SPIFFE id of the client certificate a sidecar connected
with on Pilot's TLS xDS port (verified against Pilot's roots), as istiod trusts the certificate
over what a proxy says of itself; a sidecar on the plaintext port has only its node metadata
(``SERVICE_ACCOUNT`` / ``NAMESPACE``) to go by. Which one was used is in :meth:`describe`.

A sidecar that disconnects keeps its instances meshed for ``grace_s`` (default 60 s): a sidecar
reconnecting, or Pilot restarting, must not turn its consumers to plaintext in between. Labels
given at registration win over learned ones. No registry is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

TLS_MODE_LABEL = "security.istio.io/tlsMode"
SA_LABEL = "sofamesh.io/service-account"
NAMESPACE_LABEL = "sofamesh.io/namespace"
MTLS_METADATA = "sofamesh.mtls"
INSTANCES_KEY = "sofamesh.instances"
INSTANCE_IPS_KEY = "INSTANCE_IPS"


def names(value: Any) -> tuple[str, ...]:
    """A node metadata list: a list, or a comma-separated string."""
    if isinstance(value, str):
        return tuple(sorted(v.strip() for v in value.split(",") if v.strip()))
    if isinstance(value, list | tuple):
        return tuple(sorted(str(v) for v in value))
    return ()


@dataclass(frozen=True, slots=True)
class _Sidecar:
    ids: frozenset[str]
    ips: frozenset[str]
    labels: Mapping[str, str]
    identity_from: str = "metadata"  # or "certificate"


class ConnectedSidecars:
    """The sidecars connected now (by stream), and those gone less than ``grace_s`` ago."""

    def __init__(self, grace_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self._live: dict[int, _Sidecar] = {}
        self._gone: dict[int, tuple[float, _Sidecar]] = {}
        self._by_id: dict[str, Mapping[str, str]] = {}
        self._by_ip: dict[str, Mapping[str, str]] = {}

    @staticmethod
    def sidecar(metadata: Mapping[str, Any], certified: tuple[str, str] | None = None) -> _Sidecar | None:
        """What a node's metadata says about the instances it stands in front of, or ``None``;
        ``certified``: (namespace, service account) of its verified client certificate, which wins."""
        if metadata.get(MTLS_METADATA) is not True:
            return None
        ids = frozenset(names(metadata.get(INSTANCES_KEY)))
        ips = frozenset(names(metadata.get(INSTANCE_IPS_KEY))) if not ids else frozenset()
        if not ids and not ips:
            return None
        labels = {TLS_MODE_LABEL: "istio"}
        if metadata.get("SERVICE_ACCOUNT"):
            labels[SA_LABEL] = str(metadata["SERVICE_ACCOUNT"])
        if metadata.get("NAMESPACE"):
            labels[NAMESPACE_LABEL] = str(metadata["NAMESPACE"])
        if certified is not None:
            labels[NAMESPACE_LABEL], labels[SA_LABEL] = certified
            return _Sidecar(ids, ips, labels, "certificate")
        return _Sidecar(ids, ips, labels)

    def connected(self, stream: int, metadata: Mapping[str, Any], certified: tuple[str, str] | None = None) -> bool:
        """A stream named its node; ``True`` when that changed which instances are meshed.
        ``certified``: (namespace, service account) of the stream's verified client certificate."""
        sc = self.sidecar(metadata, certified)
        if sc is None:
            return False
        self._live[stream] = sc
        return self._reindex()

    def disconnected(self, stream: int) -> None:
        """A stream ended: its instances stay meshed for ``grace_s`` (see :meth:`expire`)."""
        sc = self._live.pop(stream, None)
        if sc is not None:
            self._gone[stream] = (self._clock() + self.grace_s, sc)

    def expire(self) -> bool:
        """Forget sidecars gone longer than ``grace_s``; ``True`` when meshed instances changed."""
        now = self._clock()
        old = [k for k, (until, _) in self._gone.items() if until <= now]
        for k in old:
            del self._gone[k]
        return bool(old) and self._reindex()

    def _reindex(self) -> bool:
        by_id: dict[str, Mapping[str, str]] = {}
        by_ip: dict[str, Mapping[str, str]] = {}
        for sc in [s for _, s in self._gone.values()] + list(self._live.values()):  # live last: they win
            for i in sc.ids:
                by_id[i] = sc.labels
            for ip in sc.ips:
                by_ip[ip] = sc.labels
        changed = by_id != self._by_id or by_ip != self._by_ip
        self._by_id, self._by_ip = by_id, by_ip
        return changed

    def labels_for(self, instance_id: str, address: str) -> Mapping[str, str] | None:
        """The labels learned for an instance, or ``None`` when no sidecar named it."""
        return self._by_id.get(instance_id) or self._by_ip.get(address)

    def describe(self) -> dict[str, Any]:
        return {
            "connected": len(self._live),
            "in_grace": len(self._gone),
            "instances": sorted(self._by_id),
            "addresses": sorted(self._by_ip),
            "identity_from": {k: sc.identity_from for k, sc in sorted(self._live.items())},
        }


__all__ = ["ConnectedSidecars", "names"]
