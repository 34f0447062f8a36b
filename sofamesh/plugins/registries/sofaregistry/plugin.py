"""Entry point of the ``sofaregistry`` registry plugin (group ``sofamesh.pilot.plugins``) and its Registry.

Maps publications to the mesh model: a ``dataId`` is a service (SOFARPC's ``interface:version@DEFAULT``
becomes ``interface:version``); each published datum that is a URL ``scheme://host:port?query``
(SOFARPC's provider URL) is an instance. Data that is not such a URL is served to SOFARegistry
subscribers but is not in the model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from sofamesh.core.errors import ConfigError
from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.model import PROTOCOLS, Service, ServiceInstance
from sofamesh.pilot.registry import Notify, Registry
from sofamesh.plugins.registries.sofaregistry.session import Publication, SessionServer

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import RegistryContext, RegistryFactory

log = logging.getLogger("sofamesh.pilot.registry.sofaregistry")
_DEFAULT_SUFFIX = "@DEFAULT"
_OPTIONS = ("bolt_address", "http_address", "advertise")


def service_name(data_id: str) -> str:
    """SOFARPC's dataId ``interface:version@DEFAULT`` names the service ``interface:version``."""
    return data_id[: -len(_DEFAULT_SUFFIX)] if data_id.endswith(_DEFAULT_SUFFIX) else data_id


def instances_of(registry: str, pubs: Sequence[Publication]) -> tuple[Service | None, list[ServiceInstance]]:
    """The model's view of the publications of one dataId (invalid data is skipped, and logged)."""
    service: Service | None = None
    out: list[ServiceInstance] = []
    for pub in pubs:
        for i, datum in enumerate(pub.data):
            try:
                url = urlsplit(datum)
                if not url.scheme or not url.hostname or not url.port:
                    continue
                query = dict(parse_qsl(url.query))
                protocol = url.scheme if url.scheme in PROTOCOLS else "bolt"
                name = service_name(pub.data_id)
                if service is None:
                    service = Service(name=name, protocol=protocol, ports=(url.port,))
                weight = query.get("weight", "")
                labels = {"zone": pub.zone, "sofaregistry.group": pub.group, "sofaregistry.dataId": pub.data_id}
                if pub.app:
                    labels["app"] = pub.app
                out.append(ServiceInstance(
                    service=name, id=f"{pub.regist_id}-{i}", address=url.hostname, port=url.port,
                    weight=int(weight) if weight.isdigit() and int(weight) > 0 else 1,
                    labels=labels, version=query.get("version", ""), origin=registry))
            except (ValueError, ConfigError) as exc:
                log.warning("sofaregistry: publication %s of %s is not an instance: %s", pub.regist_id,
                            pub.data_id, exc)
    return service, out


class SofaRegistry(Registry):
    """Read-only from the API's side: its instances are written by SOFARegistry clients."""

    def __init__(self, name: str, server: SessionServer) -> None:
        self.name = name
        self.server = server
        self._services: dict[str, Service] = {}
        self._instances: dict[str, tuple[ServiceInstance, ...]] = {}
        self._notify: Notify = lambda names: None
        server.on_change = self._on_change

    async def start(self, notify: Notify) -> None:
        self._notify = notify
        await self.server.start()
        log.info("sofaregistry %s: bolt on %s, server list on %s", self.name, self.server.advertise,
                 self.server.http.address if self.server.http else "-")

    async def stop(self) -> None:
        await self.server.stop()

    def _on_change(self, data_id: str) -> None:
        name = service_name(data_id)
        pubs = [p for p in self.server.publications.values() if service_name(p.data_id) == name]
        service, insts = instances_of(self.name, pubs)
        if service is None or not insts:
            if self._services.pop(name, None) is None:
                return
            self._instances.pop(name, None)
        else:
            self._services[name] = service
            self._instances[name] = tuple(insts)
        self._notify([name])

    def services(self) -> Mapping[str, Service]:
        return MappingProxyType(self._services)

    def instances(self, service: str) -> Sequence[ServiceInstance]:
        return self._instances.get(service, ())

    def describe(self) -> dict[str, Any]:
        return {"type": "sofaregistry", **self.server.describe()}


class SofaRegistryFactory:
    """Options: ``bolt_address`` (``127.0.0.1:9600``, the session server's Bolt port),
    ``http_address`` (``127.0.0.1:9603``, the server-list port a client's ``endpoint:port`` names;
    ``null`` = none), ``advertise`` (the ``ip:port`` the server list answers; default the Bolt one)."""

    def create(self, context: RegistryContext) -> SofaRegistry:
        opts = dict(context.options)
        unknown = sorted(set(opts) - set(_OPTIONS))
        if unknown:
            raise ConfigError(f"registries.{context.name}",
                              f"unknown option(s) {', '.join(unknown)} (known: {', '.join(_OPTIONS)})")
        server = SessionServer(str(opts.get("bolt_address", "127.0.0.1:9600")),
                               None if opts.get("http_address", "") is None
                               else str(opts.get("http_address") or "127.0.0.1:9603"),
                               opts.get("advertise"))
        return SofaRegistry(context.name, server)


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("sofaregistry", SofaRegistryFactory())
