"""The cache of a registry that mirrors an external server (the ``*-cluster`` adapters): services
and instances by name, the changes applied at once after a write, and the name notified when they
differ; and, for the adapters that poll their server (Eureka, Nacos), the loops that fetch and
renew, with the last known instances kept and ``stale`` set while the server is away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import httpx

from sofamesh.core.errors import PluginError
from sofamesh.core.net.loop import cancel
from sofamesh.pilot.model import Service, ServiceInstance
from sofamesh.pilot.registry import Notify

log = logging.getLogger("sofamesh.pilot.registry.mirrored")
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class MirroredCache:
    """Mixed into an adapter (a :class:`~sofamesh.pilot.registry.Registry`) that sets ``name`` and
    ``server`` (the product's name, for messages)."""

    name: str
    server: str

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

    @staticmethod
    def _check_write(service: Service, instance: ServiceInstance) -> None:
        """A registration whose instance names another service is refused before it is sent."""
        if instance.service != service.name:
            raise PluginError(f"instance {instance.id!r} names service {instance.service!r}, not {service.name!r}")

    def _refused(self, what: str, resp: httpx.Response) -> PluginError:
        """The error for a write the server answered with ``resp`` (not a success): ``what`` it was."""
        return PluginError(
            f"registry {self.name!r}: {self.server} refused {what}: {resp.status_code} {resp.text[:200]}"
        )

    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return tuple(self._instances.get(service, {}).values())


class PolledMirror(MirroredCache):
    """A mirror kept by fetching every ``fetch_interval_s`` (``_fetch``) and whose own registrations
    are renewed every ``renew_interval_s`` (``heartbeat``). Subclasses set ``server``, ``endpoint``
    and ``_http``, call ``_init_polling``, and implement ``_fetch`` and ``heartbeat``."""

    endpoint: str
    stale: bool
    _http: httpx.AsyncClient

    def _init_polling(self, fetch_interval_s: float, renew_interval_s: float) -> None:
        self._init_cache()
        self.fetch_interval_s = max(0.1, float(fetch_interval_s))
        self.renew_interval_s = max(0.1, float(renew_interval_s))
        self._own: dict[tuple[str, str], Any] = {}  # what this registry registered: renewed
        self._tasks: list[asyncio.Task[None]] = []
        self.stale = True
        self.errors = 0

    async def _fetch(self, first: bool) -> set[str]:
        """One fetch from the server, applied to the cache; the model services that changed."""
        raise NotImplementedError

    async def heartbeat(self, service: str, instance_id: str) -> bool:
        raise NotImplementedError

    async def start(self, notify: Notify) -> None:
        try:
            changed = await self._fetch(True)
        except (httpx.HTTPError, ValueError, PluginError) as exc:
            await self._http.aclose()
            raise PluginError(
                f"registry {self.name!r}: {self.server} at {self.endpoint} is unreachable: {exc}"
            ) from exc
        self.stale = False
        self._notify = notify
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._renewals())]
        if changed:
            notify(sorted(changed))

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel(task)
        self._tasks = []
        await self._http.aclose()

    async def _follow(self) -> None:
        attempt = 0
        while True:
            await asyncio.sleep(self.fetch_interval_s if attempt == 0 else BACKOFF_S[min(attempt, 4)])
            try:
                changed = await self._fetch(False)
            except (httpx.HTTPError, ValueError, PluginError) as exc:
                self.errors += 1
                self.stale = True  # the last known instances stay
                attempt += 1
                log.info("registry %s: fetch from %s failed (%s)", self.name, self.endpoint, exc)
                continue
            attempt = 0
            self.stale = False
            if changed:
                self._notify(sorted(changed))

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PluginError(f"registry {self.name!r}: {method} {path} at {self.endpoint} failed: {exc}") from exc

    async def _renewals(self) -> None:
        while True:
            await asyncio.sleep(self.renew_interval_s)
            for service, iid in list(self._own):
                try:
                    await self.heartbeat(service, iid)
                except PluginError as exc:
                    self.errors += 1
                    log.info("registry %s: renewal of %s/%s failed: %s", self.name, service, iid, exc)


__all__ = ["BACKOFF_S", "MirroredCache", "PolledMirror"]
