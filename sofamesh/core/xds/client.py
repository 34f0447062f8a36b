"""The sidecar's ADS client: subscribes to LDS/CDS (wildcard) and the RDS/EDS/SDS names they need,
state-of-the-world or delta, translates every update (``translate.py``) and applies it with
``Server.apply``. Secrets a listener fetches over ADS (a gateway's ``credentialName``) go into the
process's secret store as they arrive, so a rotated one reaches the next handshake. An update that
cannot be translated or applied is NACKed with the error, and the last good config keeps serving.
When the stream fails the next of the configured servers (Pilot replicas) is tried at once, as
Envoy cycles through ``grpc_services``; after a whole round fails, the client waits with jittered
exponential backoff.

Runs in the data plane's loop; nothing here is on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Collection
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from sofamesh import __version__
from sofamesh.core.errors import ConfigError, ConfigErrors, MeshError
from sofamesh.core.net.pilot_channel import pilot_channel, read_roots
from sofamesh.core.net.secrets import DEFAULT_CERT, PROCESS_SECRETS, CertificateSecret
from sofamesh.core.xds.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    SHORT,
    TYPE_ORDER,
    UNKNOWN_CLUSTER,
    Translated,
    assemble,
    decode,
    translate,
)

if TYPE_CHECKING:
    from sofamesh.core.config.model import ProxyConfig, XdsConfig
    from sofamesh.core.server_view import ServerView

log = logging.getLogger("sofamesh.xds")
_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
_WILDCARD = (CLUSTER_TYPE, LISTENER_TYPE)  # clusters first, as Envoy asks
_INVALID_ARGUMENT = 3
MTLS_METADATA = "sofamesh.mtls"
"""Node metadata a proxy with an agent sends (``true``): it can originate and accept mTLS with the
SDS secrets ``default`` / ``ROOTCA``, so Pilot sends it auto-mTLS clusters and inbound listeners."""
ADMIN_METADATA = "sofamesh.admin"
"""Node metadata: ``host:port`` of this proxy's admin server, where Pilot's dashboard reads its
``/stats`` (docs/dashboard.md). Absent without an admin server."""


class _TypeState:
    __slots__ = ("acked", "applied_at", "last_nack", "names", "nonce", "received", "resources", "status", "version")

    def __init__(self) -> None:
        self.version = ""  # last applied version_info (SotW) / system_version_info (delta)
        self.nonce = ""  # nonce of the last response received on this stream
        self.names: set[str] = set()  # subscribed names (RDS/EDS); LDS/CDS are wildcard
        self.resources: dict[str, str] = {}  # applied resource name -> its version
        self.received = False
        self.status = "REQUESTED"
        self.acked = 0
        self.applied_at = 0.0
        self.last_nack: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "nonce": self.nonce,
            "status": self.status,
            "acks": self.acked,
            "names": sorted(self.names),
            "resources": dict(sorted(self.resources.items())),
            "applied_at": self.applied_at or None,
            "last_nack": self.last_nack,
        }


class ConfigTarget(Protocol):
    """What the client feeds: a ``ServerView``, or the relay to ``--workers`` (``relay.py``)."""

    config: ProxyConfig

    @property
    def admin_bound(self) -> str | None:
        """The admin's ``host:port``, sent to the server as node metadata ``sofamesh.admin``."""
        ...

    def apply(self, config: ProxyConfig) -> Awaitable[str | None] | None:
        """Apply ``config`` (raising ``MeshError``), or return what gives its outcome later: ``None``
        once applied, else the error (the relay: every worker's answer). The ACK waits for it."""
        ...


class XdsClient:
    """One ADS stream to one management server (of those configured), feeding one ``ConfigTarget``."""

    def __init__(self, server: ConfigTarget, base: ProxyConfig, xds: XdsConfig, protocols: Collection[str]) -> None:
        self.server = server
        self.base = base
        self.xds = xds
        self.protocols = frozenset(protocols)
        self.state = Translated()
        self.types = {url: _TypeState() for url in TYPE_ORDER}
        self.synced = asyncio.Event()
        self.connected = False
        self.connects = 0
        self.last_error = ""
        self.last_nack: dict[str, Any] | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._client_cert: object = None  # the workload certificate the channel presents (TLS only)
        self._node_sent = False
        self._servers = xds.servers
        self._current = 0  # index in _servers of the server the stream goes (or will go) to
        self.failovers = 0
        # while a config is being applied: (its type, its version), the config, and whether it completes
        # the first sync (a relay sends them along with the config)
        self.applying: tuple[str, str] = ("", "")
        self.applying_config: ProxyConfig | None = None
        self.applying_complete = False
        # LDS / RDS updates NACKed only for naming clusters CDS had not sent yet (a management
        # server may answer a new RDS subscription before it pushes the CDS those routes need):
        # (updates, removed, version, nonce, versions) by type, tried again after each CDS update
        self._waiting: dict[str, tuple[dict[str, Any], set[str], str, str, dict[str, str]]] = {}

    @property
    def address(self) -> str:
        """The management server the stream goes (or will next go) to."""
        return self._servers[self._current]

    async def _next_server(self) -> bool:
        """Move to the next configured server; ``True`` when that starts a new round."""
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        self._current = (self._current + 1) % len(self._servers)
        self.failovers += 1
        return self._current == 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    def describe(self) -> dict[str, Any]:
        return {
            "server": self.address,
            "servers": self._servers,
            "failovers": self.failovers,
            "node": self.xds.node_id,
            "cluster": self.xds.cluster,
            "mode": self.xds.mode,
            "connected": self.connected,
            "connects": self.connects,
            "synced": self.synced.is_set(),
            "last_error": self.last_error or None,
            "types": {SHORT[url]: ts.describe() for url, ts in self.types.items()},
            "last_nack": self.last_nack,
        }

    async def _run(self) -> None:
        delay = self.xds.backoff_initial_ms / 1000.0
        cap = self.xds.backoff_max_ms / 1000.0
        while True:
            started = time.monotonic()
            try:
                await self._stream()
                self.last_error = "the management server closed the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except (OSError, grpc.RpcError, ConfigError) as exc:  # ConfigError: Pilot's roots file went away
                self.last_error = str(exc)
            except Exception as exc:  # a bug must not end the subscription: log it, start over
                log.exception("xds %s: the stream failed", self.address)
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected = False
            failed = self.address
            if time.monotonic() - started > cap:
                delay = self.xds.backoff_initial_ms / 1000.0  # the stream was healthy for a while
            if len(self._servers) > 1 and not await self._next_server():
                log.warning(
                    "xds %s: %s; the last good config keeps serving; trying %s", failed, self.last_error, self.address
                )
                continue
            wait = delay * (0.5 + random.random() / 2)
            log.warning(
                "xds %s: %s; the last good config keeps serving; reconnecting in %.2f s", failed, self.last_error, wait
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, cap)

    # -- the stream --------------------------------------------------------------------------------
    def _node(self) -> base_pb2.Node:
        meta = struct_pb2.Struct()
        meta.update(self.xds.metadata)
        if self.base.agent is not None:  # this proxy holds a workload certificate: Pilot may send it mTLS
            meta.update({MTLS_METADATA: True})
        admin = self.server.admin_bound
        if admin is not None and ADMIN_METADATA not in meta:
            meta.update({ADMIN_METADATA: admin})
        loc = self.base.node.locality  # where this proxy runs (zone-aware routing), as Envoy's node
        return base_pb2.Node(
            id=self.xds.node_id,
            cluster=self.xds.cluster,
            metadata=meta,
            locality=base_pb2.Locality(region=loc.region, zone=loc.zone, sub_zone=loc.sub_zone),
            user_agent_name="sofamesh",
            user_agent_version=__version__,
        )

    async def _requests(self, queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while True:
            req = await queue.get()
            if req is None:
                return
            yield req

    async def _stream(self) -> None:
        b = self.xds
        # over TLS the workload certificate (when the agent holds one) is the client certificate, as
        # istio-agent dials istiod: Pilot knows the sidecar's identity from it. A renewed one is used
        # from the next stream on (the channel is rebuilt; an open stream keeps its session).
        mine = PROCESS_SECRETS.get(DEFAULT_CERT) if b.tls is not None and self.base.agent is not None else None
        if self._channel is not None and mine is not self._client_cert:
            await self._channel.close(None)
            self._channel = None
        if self._channel is None:
            self._client_cert = mine
            chain, key = (mine.chain_pem, mine.key_pem) if isinstance(mine, CertificateSecret) else (None, None)
            self._channel = pilot_channel(self.address, b.tls, [
                ("grpc.initial_reconnect_backoff_ms", b.backoff_initial_ms),
                ("grpc.min_reconnect_backoff_ms", b.backoff_initial_ms),
                ("grpc.max_reconnect_backoff_ms", b.backoff_max_ms),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024)], client_chain=chain, client_key=key)
        delta = self.xds.mode == "delta"
        name = "DeltaAggregatedResources" if delta else "StreamAggregatedResources"
        req_cls = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        resp_cls = discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse
        method = self._channel.stream_stream(
            _ADS + name, request_serializer=req_cls.SerializeToString, response_deserializer=resp_cls.FromString
        )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queue = queue
        self._node_sent = False
        for ts in self.types.values():
            ts.nonce = ""
        for url in _WILDCARD:
            self._subscribe(url, initial=True)
        for url, names in ((ROUTE_TYPE, self.state.rds_names()), (ENDPOINT_TYPE, self.state.eds_names()),
                           (SECRET_TYPE, self.state.sds_names())):
            if names:
                self.types[url].names = set(names)
                self._subscribe(url, initial=True)
        call = method(self._requests(queue))
        try:
            async for resp in call:
                if not self.connected:
                    self.connected = True
                    self.connects += 1
                    log.info("xds %s: connected (%s), node %s", self.address, self.xds.mode, self.xds.node_id)
                await self._on_response(resp)
        finally:
            queue.put_nowait(None)
            call.cancel()

    def _send(self, req: Any) -> None:
        if not self._node_sent:
            req.node.CopyFrom(self._node())
            self._node_sent = True
        assert self._queue is not None
        self._queue.put_nowait(req)

    def _subscribe(
        self, url: str, initial: bool = False, added: Collection[str] = (), removed: Collection[str] = ()
    ) -> None:
        ts = self.types[url]
        if self.xds.mode == "delta":
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=url)
            if initial:
                if url not in _WILDCARD:
                    req.resource_names_subscribe.extend(sorted(ts.names))
                for n, v in ts.resources.items():
                    req.initial_resource_versions[n] = v
            else:
                req.resource_names_subscribe.extend(sorted(added))
                req.resource_names_unsubscribe.extend(sorted(removed))
            self._send(req)
            return
        self._send(
            discovery_pb2.DiscoveryRequest(
                type_url=url, version_info=ts.version, response_nonce=ts.nonce, resource_names=sorted(ts.names)
            )
        )

    # -- responses ---------------------------------------------------------------------------------
    async def _on_response(self, resp: Any) -> None:
        """One DiscoveryResponse (SotW) or DeltaDiscoveryResponse: apply it, then ACK or NACK."""
        delta = self.xds.mode == "delta"
        url = resp.type_url
        ts = self.types.get(url)
        version = (resp.system_version_info or resp.nonce) if delta else resp.version_info
        if ts is None:
            self._reject(url, version, resp.nonce, f"{url}: not a type this proxy uses")
            return
        ts.nonce = resp.nonce
        updates: dict[str, Any] = {}
        versions: dict[str, str] = {}
        try:
            for i, item in enumerate(resp.resources):
                if delta and not item.HasField("resource"):
                    continue
                msg = decode(url, item.resource if delta else item)
                rname = (item.name if delta else "") or _resource_name(url, msg)
                if not rname:
                    raise ConfigError(f"{SHORT[url]} resources[{i}]", "a resource without a name")
                updates[rname] = msg
                versions[rname] = item.version if delta else version
        except ConfigError as exc:
            self._nack(url, version, resp.nonce, str(exc))
            return
        if delta:
            removed = set(resp.removed_resources)
        elif url in _WILDCARD:  # SotW LDS/CDS responses carry the whole set
            removed = set(ts.resources) - set(updates)
        else:  # SotW RDS/EDS responses carry the names they carry; drop the unsubscribed ones
            removed = set(ts.resources) - ts.names
        self._waiting.pop(url, None)  # a newer response replaces one that waited for clusters
        if await self._update(url, updates, removed, version, resp.nonce, versions):
            self._ack(url, version, resp.nonce)
            if url == CLUSTER_TYPE:
                await self._retry_waiting()

    def _ack(self, url: str, version: str, nonce: str) -> None:
        ts = self.types[url]
        ts.version = version
        if self.xds.mode == "delta":
            self._send(discovery_pb2.DeltaDiscoveryRequest(type_url=url, response_nonce=nonce))
        else:
            self._send(
                discovery_pb2.DiscoveryRequest(
                    type_url=url, version_info=version, response_nonce=ts.nonce, resource_names=sorted(ts.names)
                )
            )

    async def _retry_waiting(self) -> None:
        """Apply again the LDS / RDS updates NACKed for clusters CDS had not sent: with the clusters
        now here they are ACKed (their NACK withdrawn); still missing, they stay NACKed and wait."""
        for url in (LISTENER_TYPE, ROUTE_TYPE):
            waiting = self._waiting.pop(url, None)
            if waiting is None:
                continue
            updates, removed, version, nonce, versions = waiting
            ts = self.types[url]
            nack = ts.last_nack
            if await self._update(url, updates, removed, version, nonce, versions):
                log.info("xds: %s version %r applied once the clusters it names arrived", SHORT[url], version)
                if self.last_nack is nack:
                    self.last_nack = None
                ts.last_nack = None
                self._ack(url, version, nonce)

    def _nack(self, url: str, version: str, nonce: str, detail: str) -> None:
        ts = self.types[url]
        ts.status = "NACKED"
        ts.last_nack = {"type": SHORT[url], "version": version, "nonce": nonce, "error": detail, "at": time.time()}
        self.last_nack = ts.last_nack
        log.warning("xds: rejected %s version %r: %s", SHORT[url], version, detail)
        self._reject(url, ts.version, nonce, detail, sorted(ts.names))

    def _reject(self, url: str, version: str, nonce: str, detail: str, names: list[str] | None = None) -> None:
        status = status_pb2.Status(code=_INVALID_ARGUMENT, message=detail)
        if self.xds.mode == "delta":
            self._send(discovery_pb2.DeltaDiscoveryRequest(type_url=url, response_nonce=nonce, error_detail=status))
        else:
            self._send(
                discovery_pb2.DiscoveryRequest(
                    type_url=url,
                    version_info=version,
                    response_nonce=nonce,
                    resource_names=names or [],
                    error_detail=status,
                )
            )

    # -- applying ----------------------------------------------------------------------------------
    async def _update(
        self, url: str, updates: dict[str, Any], removed: set[str], version: str, nonce: str, versions: dict[str, str]
    ) -> bool:
        """Translate, assemble and apply; NACK and return False when anything is wrong."""
        ts = self.types[url]
        cand = self.state.copy()
        tables: dict[str, dict[str, Any]] = {
            LISTENER_TYPE: cand.listeners,
            ROUTE_TYPE: cand.routes,
            CLUSTER_TYPE: cand.clusters,
            ENDPOINT_TYPE: cand.endpoints,
            SECRET_TYPE: cand.secrets,
        }
        table = tables[url]
        errors: list[str] = []
        for rname in removed:
            table.pop(rname, None)
        for rname, msg in updates.items():
            try:
                out = translate(url, msg, self.protocols)
            except ConfigError as exc:
                errors.append(str(exc))
                continue
            if out is None:
                table.pop(rname, None)  # not for this proxy (an api_listener): ignored
            else:
                table[rname] = out
        if errors:
            self._nack(url, version, nonce, "; ".join(errors))
            return False
        if url == SECRET_TYPE:  # the store first: the listeners they complete build from it
            for rname in updates:
                PROCESS_SECRETS.set(rname, cand.secrets[rname])
        try:
            config = assemble(
                self.base,
                cand,
                check_route_clusters=url in (LISTENER_TYPE, ROUTE_TYPE) and self.types[CLUSTER_TYPE].received,
            )
            if config != self.server.config:
                self.applying, self.applying_config = (SHORT[url], version), config
                self.applying_complete = self.synced.is_set() or self._complete(cand, url)
                try:
                    outcome = self.server.apply(config)
                finally:
                    self.applying_config = None
                error = await outcome if outcome is not None else None
                if error is not None:
                    self._nack(url, version, nonce, error)
                    return False
            elif url == SECRET_TYPE and updates:
                # a rotated secret: this process's store has it; a relay to --workers sends it on
                relay = getattr(self.server, "secrets_changed", None)
                error = await relay() if callable(relay) else None
                if error is not None:
                    self._nack(url, version, nonce, error)
                    return False
        except ConfigErrors as exc:
            self._nack(url, version, nonce, "; ".join(str(e) for e in exc.errors))
            if url in (LISTENER_TYPE, ROUTE_TYPE) and all(e.message.startswith(UNKNOWN_CLUSTER) for e in exc.errors):
                self._waiting[url] = (updates, removed, version, nonce, versions)
            return False
        except MeshError as exc:
            self._nack(url, version, nonce, str(exc))
            return False
        self.state = cand
        ts.received = True
        ts.status = "ACKED"
        ts.acked += 1
        ts.applied_at = time.time()
        for rname in removed:
            ts.resources.pop(rname, None)
        ts.resources.update(versions)
        for rname in list(ts.resources):
            if rname not in table:
                ts.resources.pop(rname, None)
        self._follow(ROUTE_TYPE, cand.rds_names())
        self._follow(ENDPOINT_TYPE, cand.eds_names())
        self._follow(SECRET_TYPE, cand.sds_names())
        self._check_synced()
        return True

    def _follow(self, url: str, wanted: set[str]) -> None:
        """Keep the RDS/EDS/SDS subscription equal to what the listeners/clusters name."""
        ts = self.types[url]
        if wanted == ts.names:
            return
        added, gone = wanted - ts.names, ts.names - wanted
        ts.names = set(wanted)
        if self.xds.mode == "delta":
            self._subscribe(url, added=added, removed=gone)
        else:
            self._subscribe(url)

    def _complete(self, state: Translated, received: str = "") -> bool:
        """``state`` is a whole config: LDS and CDS arrived (``received``: the type arriving now),
        and every route and endpoint set they name."""
        if not all(self.types[t].received or t == received for t in (LISTENER_TYPE, CLUSTER_TYPE)):
            return False
        return (state.rds_names() <= set(state.routes) and state.eds_names() <= set(state.endpoints)
                and state.sds_names() <= set(state.secrets))

    def _check_synced(self) -> None:
        if self.synced.is_set() or not self._complete(self.state):
            return
        self.synced.set()
        log.info(
            "xds: synced (%d listener(s), %d cluster(s))",
            len(self.server.config.listeners),
            len(self.server.config.clusters),
        )


async def attach(server: ServerView) -> XdsClient:
    """Start an xDS client for ``server`` (whose config has an ``xds`` section) and wait, up to
    ``initial_fetch_timeout_ms``, for the first complete config; ``/ready`` answers 503 until then,
    and the listeners xDS brings accept only then (Envoy's init manager: a restarted sidecar takes
    no connection it cannot route yet)."""
    xds = server.config.xds
    assert xds is not None
    if xds.tls is not None:
        read_roots(xds.tls, "xds.tls")  # a missing or wrong roots file stops the start, naming it
    client = XdsClient(server, server.config, xds, server.protocol_names())
    server.xds = client
    server.ready = False
    held = server.hold_listeners()
    client.start()
    try:
        await asyncio.wait_for(client.synced.wait(), xds.initial_fetch_timeout_ms / 1000.0 or None)
    except TimeoutError:
        log.warning(
            "xds %s: no complete config after %d ms; serving what arrived so far",
            client.address,
            xds.initial_fetch_timeout_ms,
        )
    if held:
        await server.release()
    server.ready = True
    return client


def _resource_name(url: str, msg: Any) -> str:
    return str(msg.cluster_name if url == ENDPOINT_TYPE else msg.name)


__all__ = ["ADMIN_METADATA", "MTLS_METADATA", "XdsClient", "attach"]
