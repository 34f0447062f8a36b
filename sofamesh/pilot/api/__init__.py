"""Pilot's HTTP side: the Open Service Registry API and the admin endpoints (aiohttp)."""

from __future__ import annotations

from sofamesh.pilot.api.server import build_app

__all__ = ["build_app"]
