"""The registry adapter contract: what a registry plugin provides to Pilot.

A registry is a source of truth for services and instances. Pilot reads every configured registry
into the :class:`~sofamesh.pilot.model.MeshModel`; API writes go to the one marked writable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sofamesh.core.errors import PluginError
from sofamesh.pilot.model import MeshModel, Service, ServiceInstance

if TYPE_CHECKING:
    from aiohttp import web

Notify = Callable[[Iterable[str]], object]
"""Called by a registry with the names of the services whose data it just changed."""


@dataclass(frozen=True, slots=True)
class RegistryContext:
    """What a registry factory gets: its configured name, its options, Pilot's data directory, and
    the merged mesh model (read-only by contract) for a registry that serves its own clients
    everything the mesh knows (the Eureka, Nacos and Consul APIs)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    data_dir: Path = Path(".")
    model: MeshModel | None = None


class Registry(ABC):
    """One registry as Pilot sees it. Reads are synchronous views of the registry's local cache."""

    name: str
    writable: bool = False
    stale: bool = False
    """True while the registry cannot reach its backend: its cache is the last known state, kept
    (not emptied) until it reconnects; registry sync does not delete copies of a stale source."""

    @abstractmethod
    async def start(self, notify: Notify) -> None:
        """Load or connect, fill the local cache, then call ``notify`` on every later change."""

    @abstractmethod
    async def stop(self) -> None:
        """Release connections and timers; persist what must survive."""

    @abstractmethod
    def services(self) -> Mapping[str, Service]:
        """Every service this registry knows, by name."""

    @abstractmethod
    def instances(self, service: str) -> Sequence[ServiceInstance]:
        """The instances of ``service`` in this registry (empty when unknown)."""

    def _read_only(self) -> PluginError:
        return PluginError(f"registry {self.name!r} ({type(self).__name__}) is read-only")

    async def register(self, service: Service, instance: ServiceInstance,
                       ttl_seconds: float | None = None) -> None:
        """Add or replace ``instance``; with ``ttl_seconds`` it lives while it heartbeats."""
        raise self._read_only()

    async def deregister(self, service: str, instance_id: str) -> bool:
        """Remove one instance; ``False`` when it was not there."""
        raise self._read_only()

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        """Renew an instance's lease; ``False`` when the instance is unknown."""
        raise self._read_only()

    async def fence(self) -> None:
        """Return once the cache holds everything the registry's backend held when this was called
        (a backend shared by Pilot replicas: its watch has caught up) and ``notify`` was called for
        it; a registry whose cache is its own state is always current."""
        return None

    def http_routes(self) -> Sequence[web.AbstractRouteDef]:
        """Routes this registry serves on Pilot's API port (a registry API under its own path
        prefix, e.g. Eureka's ``/eureka``); added once, when Pilot builds its HTTP application."""
        return ()

    def describe(self) -> dict[str, Any]:
        """What ``/debug/registry`` shows about this registry beyond its services."""
        return {}


def check_options(context: RegistryContext, known: Sequence[str]) -> dict[str, Any]:
    """A copy of ``context.options``; :class:`~sofamesh.core.errors.ConfigError` on an unknown key."""
    from sofamesh.pilot.options import check_options as check

    return check(context.options, known, f"registries.{context.name}", f"registry {context.name!r}")


class RegistryFactory(Protocol):
    """What ``pilot_register_registries`` puts in the catalog."""

    def create(self, context: RegistryContext) -> Registry: ...


__all__ = ["Notify", "Registry", "RegistryContext", "RegistryFactory", "check_options"]
