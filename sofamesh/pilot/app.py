"""Pilot: builds the registries and generators its plugins register, keeps the mesh model, serves
xDS (gRPC) and the Open Service Registry API with the admin endpoints (HTTP)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from aiohttp import web
from cryptography import x509

import sofamesh.pilot.hookspecs as pilot_hookspecs
from sofamesh.core.catalog import Catalog
from sofamesh.core.errors import ConfigError, PluginError
from sofamesh.core.plugin_host import PILOT_GROUP, PluginHost
from sofamesh.core.security.spiffe import SpiffeId, uri_sans
from sofamesh.pilot.api import build_app
from sofamesh.pilot.config import PilotConfig, XdsTlsConfig
from sofamesh.pilot.election import Election, election_for
from sofamesh.pilot.fence import Fence
from sofamesh.pilot.metrics import PilotMetrics
from sofamesh.pilot.model import MeshModel, Service
from sofamesh.pilot.policy.applied import AppliedPolicy
from sofamesh.pilot.policy.entries import PolicyInstances
from sofamesh.pilot.policy.model import PolicyModel
from sofamesh.pilot.policy.resource import ResourceKey
from sofamesh.pilot.policy.store import ConfigStore, ConfigStoreContext, ConfigStoreFactory
from sofamesh.pilot.registry import Registry, RegistryContext, RegistryFactory
from sofamesh.pilot.security.admin import AdminToken
from sofamesh.pilot.security.ca import CaContext, CaFactory, CertificateAuthority
from sofamesh.pilot.security.csr import CertificateService
from sofamesh.pilot.security.followed import StorageFollower, follower_for
from sofamesh.pilot.security.jwks import JwksResolver
from sofamesh.pilot.security.serving import SERVING_CERT, TRUST, ServingCertificate
from sofamesh.pilot.security.shared_storage import security_storage
from sofamesh.pilot.security.tokens import TokenAuthority
from sofamesh.pilot.sidecars import ConnectedSidecars
from sofamesh.pilot.sync import Pair, RegistrySync
from sofamesh.pilot.traffic import TrafficGraph
from sofamesh.pilot.xds.cache import SnapshotCache
from sofamesh.pilot.xds.debounce import Debouncer
from sofamesh.pilot.xds.generator import NodeInfo, XdsGenerator
from sofamesh.pilot.xds.server import AdsServer
from sofamesh.pilot.xds.tls_port import TlsXdsPort
from sofamesh.pilot.xds.transport import XdsTransportFactory

log = logging.getLogger("sofamesh.pilot")
FENCE_TIMEOUT_S = 5.0
"""How long a new ADS stream waits for the shared stores to catch up before it is answered anyway."""


def pilot_host() -> PluginHost:
    """A plugin host over the ``sofamesh.pilot.plugins`` entry points with Pilot's hookspecs."""
    return PluginHost(group=PILOT_GROUP, hookspecs=pilot_hookspecs)


async def _maybe_await(results: list[Any]) -> None:
    for r in results:
        if inspect.isawaitable(r):
            await r


class Pilot:
    """One Pilot process's state. ``await start()``, then ``await stop()``."""

    def __init__(self, config: PilotConfig, host: PluginHost | None = None) -> None:
        self.config = config
        self.host = host or pilot_host()
        self.metrics = PilotMetrics()
        self.model = MeshModel()
        self.registries: list[Registry] = []
        self.writable_name: str | None = None
        self.ready = False
        self.xds_port = 0
        self.xds_tls_port = 0
        self.api_port = 0
        self.serving: ServingCertificate | None = None
        self.tls_port: TlsXdsPort | None = None
        self.registry_catalog: Catalog[RegistryFactory] = Catalog("registry")
        self.generator_catalog: Catalog[XdsGenerator] = Catalog("xds generator")
        self.config_store_catalog: Catalog[ConfigStoreFactory] = Catalog("config store")
        self.ca_catalog: Catalog[CaFactory] = Catalog("CA")
        self.transport_catalog: Catalog[XdsTransportFactory] = Catalog("xds transport")
        self.ca: CertificateAuthority
        self.tokens: TokenAuthority
        self.admin: AdminToken
        self.certificates: CertificateService
        self.policy = PolicyModel()
        self.policy_instances = PolicyInstances(self.policy)
        self.applied_policy = AppliedPolicy(self.policy, config.ca.trust_domain)
        self.jwks = JwksResolver(config.jwks.refresh_s, config.jwks.retry_s, config.jwks.timeout_s,
                                 on_change=self._on_jwks_change)
        self.config_store: ConfigStore
        self.cache: SnapshotCache | None = None
        self._ads: AdsServer | None = None
        self._debouncer: Debouncer | None = None
        self._runner: web.AppRunner | None = None
        self._last_service: dict[str, Service] = {}
        self.sync: RegistrySync | None = None
        self._traffic: TrafficGraph | None = None
        self.election: Election | None = None
        self.sidecars = ConnectedSidecars()
        self._sidecar_refresh: asyncio.TimerHandle | None = None
        self._stopped = False
        self.fence = Fence(self._catch_up)
        self.fence_failures = 0
        self._security_follower: StorageFollower | None = None
        self._security_reload: asyncio.TimerHandle | None = None
        self.security_reloads = 0

    @property
    def ads(self) -> AdsServer:
        if self._ads is None:
            raise RuntimeError("Pilot is not started")
        return self._ads

    @property
    def traffic(self) -> TrafficGraph:
        if self._traffic is None:
            raise RuntimeError("Pilot is not started")
        return self._traffic

    def writable_registry(self) -> Registry:
        for reg in self.registries:
            if reg.name == self.writable_name:
                return reg
        raise PluginError("no writable registry is configured (set writable: true on one registry)")

    # -- building ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.host.load_all()
        self.host.fill("pilot_register_registries", self.registry_catalog)
        self.host.fill("pilot_register_xds_generators", self.generator_catalog)
        self.host.fill("pilot_register_config_stores", self.config_store_catalog)
        self.host.fill("pilot_register_cas", self.ca_catalog)
        self.host.fill("pilot_register_xds_transports", self.transport_catalog)
        transport = self.transport_catalog.get(self.config.xds.transport, "xds.transport").create()
        ca = self.config.ca
        self.security_storage = security_storage(ca.storage.type, ca.storage.options, self.config.data_dir)
        self.ca = self.ca_catalog.get(ca.type, "ca.type").create(
            CaContext(ca.type, ca.trust_domain, self.security_storage, ca.options, self.config.data_dir))
        cs = self.config.config_store
        self.config_store = self.config_store_catalog.get(cs.type, "config_store.type").create(
            ConfigStoreContext(cs.type, cs.options, self.config.data_dir))
        for i, rc in enumerate(self.config.registries):
            factory = self.registry_catalog.get(rc.type, f"registries[{i}].type")
            reg = factory.create(RegistryContext(rc.name, rc.options, self.config.data_dir, self.model))
            if rc.writable and not reg.writable:
                raise ConfigError(f"registries[{i}].writable", f"registry type {rc.type!r} is read-only")
            self.registries.append(reg)
            self.model.add_registry(reg)
        explicit = [rc.name for rc in self.config.registries if rc.writable]
        self.model.add_registry(self.policy_instances)  # after the registries: their Service wins
        self.policy.add_listener(self._on_policy_change)
        implicit = [r.name for r, rc in zip(self.registries, self.config.registries, strict=True)
                    if r.writable and rc.writable is None]
        self.writable_name = explicit[0] if explicit else (implicit[0] if implicit else None)
        for _name, gen in self.generator_catalog.items():
            use_policy = getattr(gen, "use_policy", None)  # PolicyAware generators read mesh policy
            if callable(use_policy):
                use_policy(self.applied_policy)
            use_jwks = getattr(gen, "use_jwks", None)  # generators inlining a jwksUri's keys (Envoy)
            if callable(use_jwks):
                use_jwks(self.jwks)
        self.cache = SnapshotCache(self.model, self.generator_catalog.items())
        self._ads = AdsServer(self.cache, self.metrics, transport=transport)
        self.model.overlay = self.sidecars.labels_for
        self._ads.on_node = self._sidecar_connected
        self._ads.on_closed = self._sidecar_closed
        if self._shared_stores():  # a store only this process writes is always current: no fence
            self._ads.fence = self._fenced
        deb = self.config.debounce
        self._debouncer = Debouncer(self._ads.push, deb.quiet_ms / 1000, deb.max_delay_ms / 1000)
        dash = self.config.dashboard
        self._traffic = TrafficGraph(self._ads, dash.scrape_interval_s, dash.scrape_timeout_s,
                                     dash.max_proxies_per_scrape, dash.rate_window_s)
        self.model.add_listener(self._on_change)
        if self.config.sync.pairs:
            pairs = [Pair(p.source, p.target, p.two_way) for p in self.config.sync.pairs]
            self.sync = RegistrySync(self.registries, pairs, self.config.sync.resync_interval_s)
            self.model.add_listener(self.sync.mark)

    def _on_change(self, names: frozenset[str]) -> None:
        self.metrics.mesh_changes.inc()
        hook = self.host.pm.hook.pilot_instances_changed
        if hook.get_hookimpls():
            for name in sorted(names):
                svc = self.model.service(name) or self._last_service.get(name)
                if svc is None:
                    continue
                try:
                    hook(service=svc, instances=self.model.instances(name))
                except Exception:
                    log.exception("pilot_instances_changed failed for service %s", name)
        for name in names:
            svc = self.model.service(name)
            if svc is not None:
                self._last_service[name] = svc
        if self._debouncer is not None:
            self._debouncer.trigger()

    # -- fences (pilot/fence.py) -----------------------------------------------------------------
    async def _catch_up(self) -> None:
        stores = [self.config_store.fence(), *(reg.fence() for reg in self.registries)]
        await asyncio.gather(*stores)
        if self._debouncer is not None:
            self._debouncer.flush()

    def _shared_stores(self) -> bool:
        """Whether any store can change behind this replica's back (its class has a fence)."""
        return type(self.config_store).fence is not ConfigStore.fence or any(
            type(reg).fence is not Registry.fence for reg in self.registries)

    async def _fenced(self) -> None:
        """Before a new stream's first answer; a store that cannot answer in time is logged and the
        stream is served what this replica holds (a proxy without config is worse than a late one)."""
        try:
            await asyncio.wait_for(self.fence.wait(), FENCE_TIMEOUT_S)
        except Exception as exc:  # a store that is down, or a fence that broke: never the stream
            self.fence_failures += 1
            log.warning("pilot: serving a new xDS stream without a fence: %s",
                        exc or f"the shared stores did not answer within {FENCE_TIMEOUT_S:.0f} s")

    # -- which instances run a sidecar (pilot/sidecars.py) ---------------------------------------
    def _sidecar_connected(self, stream: int, node: NodeInfo) -> None:
        if self.sidecars.connected(stream, node.metadata, self._certified(stream)):
            self._refresh_for_sidecars()

    def _certified(self, stream: int) -> tuple[str, str] | None:
        """(namespace, service account) of the client certificate a stream came with on the TLS xDS
        port (verified against Pilot's roots there), or ``None``."""
        st = self.ads.streams.get(stream)
        der = self.tls_port.peer_certificate(st.peer) if st is not None and self.tls_port is not None else None
        if der is None:
            return None
        try:
            sans = uri_sans(x509.load_der_x509_certificate(der))
            spiffe = SpiffeId.parse(sans[0] if sans else "")
        except ValueError as exc:
            log.warning("xds stream %d: its client certificate names no workload (%s); node metadata used", stream, exc)
            return None
        return spiffe.namespace, spiffe.service_account

    def _sidecar_closed(self, stream: int) -> None:
        self.sidecars.disconnected(stream)
        asyncio.get_running_loop().call_later(self.sidecars.grace_s + 0.1, self._expire_sidecars)

    def _expire_sidecars(self) -> None:
        if self._stopped:
            return
        if self.sidecars.expire():
            self._refresh_for_sidecars()

    def _refresh_for_sidecars(self) -> None:
        """One re-read of the model for a burst of sidecars connecting (50 ms later)."""
        if self._sidecar_refresh is None:
            def run() -> None:
                self._sidecar_refresh = None
                if not self._stopped:
                    self.model.refresh()

            self._sidecar_refresh = asyncio.get_running_loop().call_later(0.05, run)

    def _on_store_change(self) -> None:
        self.policy.sync(self.config_store.documents())

    def _on_policy_change(self, keys: frozenset[ResourceKey]) -> None:
        if any(k.kind in ("ServiceEntry", "WorkloadEntry") for k in keys):
            changed = self.policy_instances.rebuild()
            if changed:
                self.model.refresh(changed)
        if self._debouncer is not None:  # routes and clusters follow policy: push what changed
            try:
                self._debouncer.trigger()
            except RuntimeError:  # no running loop yet (the first sync, before start): nothing to push to
                pass

    def _on_jwks_change(self) -> None:
        if self._debouncer is not None:  # a jwksUri's keys changed: proxies holding them inline get them
            self._debouncer.trigger()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._build()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.config_store.start(self._on_store_change)
        self._on_store_change()
        for reg in self.registries:
            await reg.start(self.model.refresh)
        self.model.refresh()
        if self.sync is not None:
            await self._start_sync(self.sync)
        await self._start_security()
        await self.jwks.start()
        xhost, xport = self.config.xds.host_port
        self.xds_port = await self.ads.start(xhost, xport, (self.certificates.handler(),),
                                             loopback=self.config.xds_tls is not None)
        if self.config.xds_tls is not None:
            await self._start_tls_port(self.config.xds_tls)
        ahost, aport = self.config.api.host_port
        self._runner = web.AppRunner(build_app(self), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, ahost, aport)
        await site.start()
        self.api_port = int(self._runner.addresses[0][1])
        await _maybe_await(self.host.pm.hook.pilot_startup(pilot=self))
        self.traffic.start()
        self.ready = True
        log.info("pilot ready: xds %s:%d api %s:%d, registries %s (writable: %s)", xhost, self.xds_port,
                 ahost, self.api_port, ", ".join(r.name for r in self.registries), self.writable_name)

    async def _start_sync(self, sync: RegistrySync) -> None:
        """Run registry sync here, or (``sync.election``) only while this replica is elected."""
        cfg = self.config.sync.election
        if cfg is None:
            await sync.start()
            return
        self.election = election_for(cfg.type, cfg.options, cfg.ttl_s)
        await self.election.start(sync.start, sync.stop)

    async def _start_security(self) -> None:
        ca = self.config.ca
        await self.ca.start()
        self.admin = AdminToken.load_or_create(self.config.admin_token_file or self.config.data_dir / "admin-token")
        self.tokens = TokenAuthority(self.security_storage, ca.trust_domain)
        self.certificates = CertificateService(self.ca, self.tokens, ca.trust_domain,
                                               default_ttl_s=ca.workload_ttl_s, min_ttl_s=ca.min_workload_ttl_s,
                                               max_ttl_s=ca.max_workload_ttl_s)
        self._security_follower = follower_for(self.security_storage)
        if self._security_follower is not None:
            await self._security_follower.start(self._security_changed)

    def _security_changed(self) -> None:
        """A blob of the shared security storage changed: read it again 50 ms later (a rotation
        step writes several blobs; one read for the burst)."""
        if self._security_reload is None and not self._stopped:
            self._security_reload = asyncio.get_running_loop().call_later(0.05, self._reload_security)

    def _reload_security(self) -> None:
        self._security_reload = None
        try:
            self.ca.reload()
            self.tokens.reload()
        except Exception as exc:  # a blob another writer left broken: keep what is loaded, say why
            log.warning("pilot: security storage changed but could not be read again: %s", exc)
            return
        self.security_reloads += 1
        if self.serving is not None:
            self.serving.check_now()  # a rotation step taken elsewhere: the TLS xDS port's chain follows

    async def _start_tls_port(self, tls: XdsTlsConfig) -> None:
        identity = SpiffeId(self.config.ca.trust_domain, "sofamesh-system", "pilot").uri
        self.serving = ServingCertificate(self.ca, identity, tuple(tls.hostnames), tls.ttl_s)
        await self.serving.start()
        self.tls_port = TlsXdsPort(self.serving.secrets, SERVING_CERT, TRUST, self.ads.loopback_port)
        self.certificates.peer_certificate = self.tls_port.peer_certificate
        host, port = tls.host_port
        self.xds_tls_port = await self.tls_port.start(host, port)
        log.info("pilot: TLS xds on %s:%d (certificate for %s)", host, self.xds_tls_port,
                 ", ".join(self.serving.hosts))

    async def stop(self) -> None:
        self.ready = False
        self._stopped = True
        if self.tls_port is not None:
            await self.tls_port.stop()
        if self.serving is not None:
            await self.serving.stop()
        if self._debouncer is not None:
            self._debouncer.cancel()
        self.fence.cancel()
        await self.jwks.stop()
        if self._traffic is not None:
            await self._traffic.stop()
        if self._ads is not None:
            await self._ads.stop(self.config.grace_s)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        try:
            await asyncio.wait_for(_maybe_await(self.host.pm.hook.pilot_shutdown(pilot=self)),
                                   self.config.grace_s or None)
        except TimeoutError:
            log.warning("pilot_shutdown hooks did not finish within %.1fs", self.config.grace_s)
        if self.election is not None:
            await self.election.stop()
        if self.sync is not None:
            await self.sync.stop()
        for reg in self.registries:
            await reg.stop()
        if self._security_reload is not None:
            self._security_reload.cancel()
        if self._security_follower is not None:
            await self._security_follower.stop()
        ca: CertificateAuthority | None = getattr(self, "ca", None)
        if ca is not None:
            await ca.stop()
        close = getattr(getattr(self, "security_storage", None), "close", None)
        if close is not None:  # a storage holding a connection (ZooKeeper)
            close()
        store: ConfigStore | None = getattr(self, "config_store", None)
        if store is not None:
            await store.stop()


__all__ = ["Pilot", "pilot_host"]
