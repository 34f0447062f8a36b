"""The cache of a registry that mirrors an external server (the ``*-cluster`` adapters): services
and instances by name, the changes applied at once after a write, and the name notified when they
differ."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.registry import Notify


class MirroredCache:
    """Mixed into an adapter (a :class:`~sofamesh.pilot.registry.Registry`) that sets ``name``."""

    name: str

    def _init_cache(self) -> None:
        self._notify: Notify = lambda names: None
        self._services: dict[str, Service] = {}
        self._instances: dict[str, dict[str, ServiceInstance]] = {}

    def _set(self, name: str, service: Service | None, insts: dict[str, ServiceInstance]) -> bool:
        """Replace ``name``'s instances (none: the service is gone); whether anything changed."""
        before = (self._services.get(name), self._instances.get(name))
        if service is None:
            self._services.pop(name, None)
            self._instances.pop(name, None)
        else:
            self._services[name], self._instances[name] = service, insts
        return (self._services.get(name), self._instances.get(name)) != before

    def _applied(self, service: Service, instance: ServiceInstance) -> None:
        """A write accepted by the server, applied at once so a read right after it sees it."""
        applied = replace(instance, origin=self.name)
        if self._instances.get(service.name, {}).get(instance.id) != applied:
            self._services.setdefault(service.name, service)
            self._instances.setdefault(service.name, {})[instance.id] = applied
            self._notify([service.name])

    def _dropped(self, service: str, instance_id: str) -> None:
        insts = self._instances.get(service, {})
        if insts.pop(instance_id, None) is not None:
            if not insts:
                self._instances.pop(service, None)
                self._services.pop(service, None)
            self._notify([service])

    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return tuple(self._instances.get(service, {}).values())


__all__ = ["MirroredCache"]
