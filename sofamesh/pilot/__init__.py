"""sofamesh Pilot: the control plane (registries -> mesh model -> xDS, plus the Open Service Registry API).

The mesh model's names are imported on first use: the proxy's command line reads ``sofamesh.pilot.cli``
to list the ``pilot`` command and must not pay for the model (its dataclasses and asyncio helpers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sofamesh.pilot.model import MeshModel, Service, ServiceInstance

__version__ = "0.1.0"

__all__ = ["MeshModel", "Service", "ServiceInstance", "__version__"]

_FROM_MODEL = frozenset({"MeshModel", "Service", "ServiceInstance"})


def __getattr__(name: str) -> Any:
    if name in _FROM_MODEL:
        from sofamesh.pilot import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
