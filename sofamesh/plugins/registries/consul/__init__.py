"""The ``consul`` registry: Pilot serves Consul's registry API to its clients (``api.py``), names, metadata
and health mapped into the mesh model in ``mapping.py``."""

from __future__ import annotations

from sofamesh.plugins.registries.consul.api import ConsulRegistry

__all__ = ["ConsulRegistry"]
