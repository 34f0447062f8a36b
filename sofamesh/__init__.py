"""sofamesh: a service mesh in Python (sidecar / edge gateway and Pilot)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
