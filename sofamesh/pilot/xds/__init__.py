"""Pilot's xDS side: the generator contract, the built-in generators, the snapshot cache and the ADS server."""

from __future__ import annotations

from sofamesh.pilot.xds.generator import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    NodeInfo,
    XdsGenerator,
    XdsResource,
)

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "NodeInfo", "XdsGenerator", "XdsResource"]
