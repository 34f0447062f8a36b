"""The ``nacos`` registry: Pilot serves Nacos's registry API to its clients (``api.py``), names, metadata
and health mapped into the mesh model in ``mapping.py``."""

from __future__ import annotations

from sofamesh.plugins.registries.nacos.api import NacosRegistry

__all__ = ["NacosRegistry"]
