"""Pilot's Prometheus metrics, one registry per Pilot (so tests can run several in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class PilotMetrics:
    """Counters the xDS server and the API update; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pushes = Counter("pilot_xds_pushes", "xDS responses sent", ["type", "mode"], registry=r)
        self.push_seconds = Histogram(
            "pilot_xds_push_seconds", "Time from the first mesh change of a burst to its push being sent",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.nacks = Counter("pilot_xds_nacks", "xDS responses rejected by clients", ["type"], registry=r)
        self.acks = Counter("pilot_xds_acks", "xDS responses acknowledged by clients", ["type"], registry=r)
        self.connected = Gauge("pilot_xds_connected_nodes", "ADS streams open now", ["mode"], registry=r)
        self.response_bytes = Counter("pilot_xds_response_bytes", "Serialized bytes of xDS responses sent",
                                      ["type"], registry=r)
        self.mesh_changes = Counter("pilot_mesh_changes", "Mesh model changes applied", registry=r)
        self.api_requests = Counter("pilot_api_requests", "Open Service Registry API requests",
                                    ["method", "code"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["PilotMetrics"]
