"""The ``eureka`` registry: Pilot serves Eureka's registry API to its clients (``api.py``), names, metadata
and health mapped into the mesh model in ``mapping.py``."""

from __future__ import annotations

from sofamesh.plugins.registries.eureka.api import EurekaRegistry

__all__ = ["EurekaRegistry"]
