"""Entry point (group ``sofamesh.plugins``) and the server of the SOFA mesh app API.

Enabled by ``extensions: {mesh_app_api: {...}}`` in the proxy YAML. Serves, on ``address``
(127.0.0.1:13330 by default), POST ``configs/application``, ``services/publish``,
``services/unpublish``, ``services/subscribe`` and ``services/unsubscribe`` with JSON bodies, each
answered ``{"success": true}`` (or ``{"success": false, "errorMessage": ...}``):
- publish registers ``<advertise_host>:<port>`` as an instance of ``serviceName`` through Pilot's
  Open Service Registry API (``pilot_api``); unpublish deregisters it;
- subscribe reads the service's instances from Pilot (and again every ``poll_ms``) and makes the
  service routable on the Bolt egress listener (``egress_listener``, by name or address): a
  route ``service: {exact: serviceName}`` to a bolt cluster ``mesh_app.<serviceName>``, applied
  with ``Server.apply``. Unsubscribe removes both.
Nothing here runs per request: the data path sees ordinary routes and clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import aiohttp

from sofamesh.core.admin import HttpMini
from sofamesh.core.config.model import ClusterConfig, ProxyConfig, RouteConfig
from sofamesh.core.errors import ConfigError
from sofamesh.core.plugin_host import hookimpl

if TYPE_CHECKING:
    from sofamesh.core.server_view import ServerView

log = logging.getLogger("sofamesh.mesh_app_api")
NAME = "mesh_app_api"
CLUSTER_PREFIX = "mesh_app."
_OPTIONS = {"address": "127.0.0.1:13330", "pilot_api": "http://127.0.0.1:15080", "egress_listener": "",
            "advertise_host": "127.0.0.1", "poll_ms": 1000, "ttl_s": 10}
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:@\-]")


def settings(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"extensions.{NAME}", f"unknown option(s) {', '.join(unknown)} "
                                                f"(known: {', '.join(_OPTIONS)})")
    return {**_OPTIONS, **raw}


class MeshAppApi:
    """The app API of one sidecar: its HTTP server, its Pilot client, its subscriptions."""

    def __init__(self, server: ServerView, opts: dict[str, Any]) -> None:
        self.server = server
        self.opts = opts
        self.base: ProxyConfig = server.config
        self.egress = self._egress_index(self.base, str(opts["egress_listener"]))
        self.http = HttpMini(str(opts["address"]), self._handle)
        self.pilot = str(opts["pilot_api"]).rstrip("/")
        self.app: dict[str, Any] = {}
        self.published: dict[str, str] = {}  # serviceName -> instance id
        self._bodies: dict[str, dict[str, Any]] = {}  # serviceName -> the registration sent to Pilot
        self.subscribed: dict[str, list[str]] = {}  # serviceName -> endpoints "host:port"
        self._session: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None

    @staticmethod
    def _egress_index(config: ProxyConfig, name: str) -> int:
        for i, lc in enumerate(config.listeners):
            if name in (lc.name, lc.address) or (not name and "bolt" in lc.protocols):
                return i
        raise ConfigError(f"extensions.{NAME}.egress_listener",
                          f"no listener named {name!r}" if name else "no listener serves bolt")

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        await self.http.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll_forever())
        log.info("mesh app API on %s (pilot %s)", self.opts["address"], self.pilot)

    async def stop(self) -> None:
        await self.http.stop()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for service in list(self.published):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._unpublish(service)
        if self._session is not None:
            await self._session.close()

    # -- HTTP --------------------------------------------------------------------------------
    async def _handle(self, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        routes = {"/configs/application": self._application, "/services/publish": self._publish,
                  "/services/unpublish": self._unpublish_req, "/services/subscribe": self._subscribe,
                  "/services/unsubscribe": self._unsubscribe}
        fn = routes.get(path)
        if fn is None:
            return 404, "application/json", b'{"success": false, "errorMessage": "not found"}'
        try:
            doc = json.loads(body or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("the body is not a JSON object")
            await fn(doc)
            answer: dict[str, Any] = {"success": True}
        except (ValueError, KeyError, ConfigError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("mesh app API %s failed: %s", path, exc)
            answer = {"success": False, "errorMessage": f"{type(exc).__name__}: {exc}"}
        return 200, "application/json", json.dumps(answer).encode()

    async def _application(self, doc: dict[str, Any]) -> None:
        self.app = doc

    async def _publish(self, doc: dict[str, Any]) -> None:
        service, port = str(doc["serviceName"]), int(doc["port"])
        meta = doc.get("providerMetaInfo") or {}
        app = str(meta.get("appName") or self.app.get("appName") or "app")
        host = str(self.opts["advertise_host"])
        instance_id = _ID_UNSAFE.sub("-", f"{app}-{host}-{port}")[:128]
        body = {"address": host, "port": port, "protocol": "bolt", "version": str(meta.get("version") or ""),
                "labels": {k: str(v) for k, v in {"app": app, "serialize_type": meta.get("serializeType"),
                                                  "zone": self.app.get("zone")}.items() if v}}
        if float(self.opts["ttl_s"]) > 0:  # the instance outlives a crashed sidecar by ttl_s at most
            body["ttl_seconds"] = float(self.opts["ttl_s"])
        await self._register(service, instance_id, body)
        self.published[service] = instance_id
        self._bodies[service] = body

    async def _register(self, service: str, instance_id: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        async with self._session.put(f"{self.pilot}/v1/services/{service}/instances/{instance_id}",
                                     json=body) as r:
            if r.status != 200:
                raise ValueError(f"pilot answered {r.status}: {(await r.text())[:200]}")

    async def _heartbeat(self) -> None:
        """Renew the leases of published instances; re-register one Pilot no longer knows."""
        assert self._session is not None
        for service, instance_id in list(self.published.items()):
            url = f"{self.pilot}/v1/services/{service}/instances/{instance_id}/heartbeat"
            async with self._session.put(url) as r:
                status = r.status
            if status == 404 and service in self._bodies:
                await self._register(service, instance_id, self._bodies[service])

    async def _unpublish_req(self, doc: dict[str, Any]) -> None:
        await self._unpublish(str(doc["serviceName"]))

    async def _unpublish(self, service: str) -> None:
        instance_id = self.published.pop(service, None)
        self._bodies.pop(service, None)
        if instance_id is None:
            return
        assert self._session is not None
        async with self._session.delete(f"{self.pilot}/v1/services/{service}/instances/{instance_id}") as r:
            if r.status not in (200, 404):
                raise ValueError(f"pilot answered {r.status}")

    async def _subscribe(self, doc: dict[str, Any]) -> None:
        service = str(doc["serviceName"])
        self.subscribed[service] = await self._endpoints(service)
        self._apply()

    async def _unsubscribe(self, doc: dict[str, Any]) -> None:
        if self.subscribed.pop(str(doc["serviceName"]), None) is not None:
            self._apply()

    # -- Pilot and the data plane --------------------------------------------------------------
    async def _endpoints(self, service: str) -> list[str]:
        assert self._session is not None
        async with self._session.get(f"{self.pilot}/v1/services/{service}/instances") as r:
            if r.status == 404:
                return []
            if r.status != 200:
                raise ValueError(f"pilot answered {r.status}")
            doc = await r.json()
        return sorted(f"{i['address']}:{i['port']}" for i in doc.get("instances", [])
                      if i.get("health", "healthy") == "healthy")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(float(self.opts["poll_ms"]) / 1000)
            if float(self.opts["ttl_s"]) > 0:
                try:
                    await self._heartbeat()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("mesh app API: cannot renew leases at pilot: %s", exc)
            changed = False
            for service in list(self.subscribed):
                try:
                    eps = await self._endpoints(service)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("mesh app API: cannot read %s from pilot: %s", service, exc)
                    continue
                if service in self.subscribed and eps != self.subscribed[service]:
                    self.subscribed[service] = eps
                    changed = True
            if changed:
                self._apply()

    def desired(self) -> ProxyConfig:
        """The startup config plus a route and a cluster per subscribed service that has endpoints."""
        routes, clusters = [], []
        for service, eps in sorted(self.subscribed.items()):
            if not eps:
                continue
            name = CLUSTER_PREFIX + service
            routes.append(RouteConfig.model_validate({"name": name, "match": {"service": {"exact": service}},
                                                      "cluster": name}))
            clusters.append(ClusterConfig.model_validate({"name": name, "protocol": "bolt", "endpoints": eps}))
        listeners = list(self.base.listeners)
        egress = listeners[self.egress]
        listeners[self.egress] = egress.model_copy(update={"routes": [*routes, *egress.routes]})
        return self.base.model_copy(update={"listeners": listeners, "clusters": [*self.base.clusters, *clusters]})

    def _apply(self) -> None:
        self.server.apply(self.desired())
        log.info("mesh app API: routable services %s",
                 {s: eps for s, eps in self.subscribed.items()})


_APIS: dict[int, MeshAppApi] = {}


@hookimpl
async def sofamesh_startup(server: ServerView) -> None:
    raw = server.config.extensions.get(NAME)
    if raw is None:
        return
    api = MeshAppApi(server, settings(raw))
    await api.start()
    _APIS[id(server)] = api


@hookimpl
async def sofamesh_shutdown(server: ServerView) -> None:
    api = _APIS.pop(id(server), None)
    if api is not None:
        await api.stop()
