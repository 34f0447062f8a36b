"""sofamesh Pilot: the control plane (registries -> mesh model -> xDS, plus the Open Service Registry API)."""

from __future__ import annotations

from sofamesh.pilot.model import MeshModel, Service, ServiceInstance

__version__ = "0.1.0"

__all__ = ["MeshModel", "Service", "ServiceInstance", "__version__"]
