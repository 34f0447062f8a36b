"""Pilot's xDS side: the generator contract, built-in generators, snapshot cache and ADS server."""

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
