"""PilotView: the shape of a running Pilot as its HTTP API and its plugins see it.

A ``typing.Protocol``, so the API server (``pilot/api/``) and the hookspecs name what they read of
Pilot without importing ``pilot/app.py``, which builds them. ``Pilot`` satisfies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sofamesh.pilot.config import PilotConfig
    from sofamesh.pilot.election import Election
    from sofamesh.pilot.fence import Fence
    from sofamesh.pilot.metrics import PilotMetrics
    from sofamesh.pilot.model import MeshModel
    from sofamesh.pilot.policy.model import PolicyModel
    from sofamesh.pilot.policy.store import ConfigStore
    from sofamesh.pilot.registry import Registry
    from sofamesh.pilot.security.admin import AdminToken
    from sofamesh.pilot.security.csr import CertificateService
    from sofamesh.pilot.security.jwks import JwksResolver
    from sofamesh.pilot.security.serving import ServingCertificate
    from sofamesh.pilot.security.tokens import TokenAuthority
    from sofamesh.pilot.sync import RegistrySync
    from sofamesh.pilot.traffic import TrafficGraph
    from sofamesh.pilot.xds.server import AdsServer
    from sofamesh.pilot.xds.tls_port import TlsXdsPort


class PilotView(Protocol):
    """What the API and plugins may read of a running Pilot (and the one registry they may write)."""

    config: PilotConfig
    metrics: PilotMetrics
    model: MeshModel
    registries: list[Registry]
    writable_name: str | None
    ready: bool
    xds_port: int
    api_port: int

    policy: PolicyModel
    """The accepted policy resources (VirtualService, DestinationRule, ..., MetaRouter)."""

    config_store: ConfigStore
    """Where policy resources are kept; the API writes accepted resources to it."""

    admin: AdminToken
    """The admin token minting, revoking and root rotation ask for."""

    tokens: TokenAuthority
    """Issues, verifies and revokes the bearer tokens workloads authenticate with."""

    certificates: CertificateService
    """Istio's CSR API on the xDS port, and its CA (``describe()`` for ``/debug/ca``)."""

    serving: ServingCertificate | None
    """Pilot's serving certificate for the TLS xDS port, ``None`` when that port is off."""

    tls_port: TlsXdsPort | None
    """The TLS xDS port (``describe()`` for ``/debug/ca``), ``None`` when off."""

    jwks: JwksResolver
    """The keys of RequestAuthentication ``jwksUri``s, fetched for Envoy sidecars (``/debug/jwks``)."""

    sync: RegistrySync | None
    """The registry sync (``describe()`` for ``/debug/syncz``), ``None`` when not configured."""
    election: Election | None
    """The election that decides which replica runs the sync (``sync.election``), else ``None``."""
    fence: Fence
    """What a new xDS stream waits for: the shared stores caught up (``runs`` for ``/debug/syncz``)."""
    fence_failures: int
    """New xDS streams answered without a fence (a store did not answer in time)."""

    @property
    def ads(self) -> AdsServer:
        """The xDS (ADS) server (``describe()`` for ``/debug/syncz``)."""
        ...

    @property
    def traffic(self) -> TrafficGraph:
        """The dashboard's call graph, scraped from the sidecars' admin servers (``/debug/graph``)."""
        ...

    def writable_registry(self) -> Registry:
        """The registry API writes go to; ``PluginError`` when none is writable."""


__all__ = ["PilotView"]
