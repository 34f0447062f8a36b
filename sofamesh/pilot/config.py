"""Pilot's configuration: the YAML file of ``sofamesh pilot -c FILE`` and the quick-mode flags.

Errors are :class:`~sofamesh.core.errors.ConfigError` with the YAML path of the wrong value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sofamesh.core.config.yaml_text import safe_load
from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.core.security.spiffe import SpiffeId


def split_address(value: str, path: str = "") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(path, f"expected HOST:PORT, got {value!r}")
    return host, int(port)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            split_address(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return v

    @property
    def host_port(self) -> tuple[str, int]:
        return split_address(self.address)


class RegistryConfig(_Strict):
    name: str
    type: str = ""
    writable: bool | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _type_defaults_to_name(self) -> RegistryConfig:
        if not self.type:
            object.__setattr__(self, "type", self.name)
        return self


class ConfigStoreConfig(_Strict):
    """Where policy resources live: ``{type: embedded}`` (default), ``files``, ``etcd``."""

    type: str = "embedded"
    options: dict[str, Any] = Field(default_factory=dict)


class SecurityStorageConfig(_Strict):
    """Where the CA's root, key and the token signing key live: ``dir`` (default, under ``data_dir``),
    or ``etcd`` / ``zookeeper`` for Pilot replicas that share one root."""

    type: Literal["dir", "etcd", "zookeeper"] = "dir"
    options: dict[str, Any] = Field(default_factory=dict)


class CaConfig(_Strict):
    """The CA and what it issues (docs/security.md): ``{type: builtin, trust_domain: cluster.local}``."""

    type: str = "builtin"
    trust_domain: str = "cluster.local"
    options: dict[str, Any] = Field(default_factory=dict)
    storage: SecurityStorageConfig = Field(default_factory=SecurityStorageConfig)
    workload_ttl_s: float = Field(default=86400.0, gt=0)
    """Lifetime of a workload certificate when the CSR asks for none (Istio's default, 24 h)."""
    min_workload_ttl_s: float = Field(default=60.0, gt=0)
    max_workload_ttl_s: float = Field(default=90 * 86400.0, gt=0)
    token_ttl_s: float = Field(default=86400.0, gt=0)
    """Lifetime of a token when ``token create`` asks for none."""
    max_token_ttl_s: float = Field(default=365 * 86400.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> CaConfig:
        if not self.min_workload_ttl_s <= self.workload_ttl_s <= self.max_workload_ttl_s:
            raise ValueError(f"workload_ttl_s ({self.workload_ttl_s:g}) must be within min_workload_ttl_s "
                             f"({self.min_workload_ttl_s:g}) and max_workload_ttl_s ({self.max_workload_ttl_s:g})")
        if self.token_ttl_s > self.max_token_ttl_s:
            raise ValueError(f"token_ttl_s ({self.token_ttl_s:g}) must be <= max_token_ttl_s "
                             f"({self.max_token_ttl_s:g})")
        SpiffeId(self.trust_domain, "ns", "sa")  # the trust domain is a valid name
        return self


class SyncPairConfig(_Strict):
    """One registry sync pair: ``{from: zk, to: etcd, two_way: true}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    two_way: bool = False


class ElectionConfig(_Strict):
    """Where Pilot replicas elect the one that runs registry sync: ``etcd`` (options ``endpoint``,
    ``key``) or ``zookeeper`` (options ``hosts``, ``path``); ``ttl_s``: how long a dead leader leads."""

    type: Literal["etcd", "zookeeper"]
    options: dict[str, Any] = Field(default_factory=dict)
    ttl_s: int = Field(5, ge=2, le=300)


class SyncConfig(_Strict):
    pairs: list[SyncPairConfig] = Field(default_factory=list)
    resync_interval_s: float = Field(5.0, gt=0, le=3600)
    election: ElectionConfig | None = None  # replicas: only the elected one runs the sync


class Debounce(_Strict):
    quiet_ms: int = Field(100, ge=0, le=60_000)
    max_delay_ms: int = Field(1000, ge=0, le=600_000)

    @model_validator(mode="after")
    def _ordered(self) -> Debounce:
        if self.max_delay_ms < self.quiet_ms:
            raise ValueError(f"max_delay_ms ({self.max_delay_ms}) must be >= quiet_ms ({self.quiet_ms})")
        return self


class DashboardConfig(_Strict):
    """The call graph of ``/ui``: how often and how much of the mesh Pilot scrapes (docs/dashboard.md)."""

    scrape_interval_s: float = Field(5.0, ge=0, le=3600)  # 0: no scraping, no call graph
    scrape_timeout_s: float = Field(1.0, gt=0, le=60)
    max_proxies_per_scrape: int = Field(100, ge=1, le=100_000)
    rate_window_s: float = Field(30.0, gt=0, le=3600)  # rates and p99 are over this much of the past


class JwksConfig(_Strict):
    """How Pilot fetches a RequestAuthentication's ``jwksUri`` for Envoy sidecars (istiod's
    ``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL``: 20 min)."""

    refresh_s: float = Field(1200.0, gt=0, le=86400)
    retry_s: float = Field(5.0, gt=0, le=3600)  # after a failed fetch (the last good keys are kept)
    timeout_s: float = Field(5.0, gt=0, le=60)


class XdsConfig(Endpoint):
    """Pilot's plaintext xDS port (istiod's 15010): ADS and the CSR API."""

    transport: str = "grpcio"
    """What serves the gRPC streams: ``grpcio`` (grpc.aio), or ``native`` (the project's own HTTP/2
    codec; docs/xds.md "Transports"). Any name a plugin registers."""


class XdsTlsConfig(Endpoint):
    """Pilot's TLS xDS port (istiod's 15012; docs/security.md): ADS and the CSR API behind TLS
    with a certificate from Pilot's own CA; a client certificate is asked for and verified when
    given (a renewal may authenticate with it instead of a token)."""

    address: str = "127.0.0.1:15012"
    hostnames: list[str] = Field(default_factory=list)
    """DNS names (or IPs) clients reach Pilot by, besides localhost, 127.0.0.1 and ::1."""
    ttl_s: float = Field(default=86400.0, gt=0)
    """Lifetime of the serving certificate; re-issued at half of it, and when the roots change."""


class PilotConfig(_Strict):
    xds: XdsConfig = Field(default_factory=lambda: XdsConfig(address="127.0.0.1:15010"))
    xds_tls: XdsTlsConfig | None = None
    """Off unless configured: a client must hold Pilot's root before it can verify this port."""
    api: Endpoint = Field(default_factory=lambda: Endpoint(address="127.0.0.1:15080"))
    data_dir: Path = Path("pilot-data")
    admin_token_file: Path | None = None  # the API's admin token (docs/security.md); default <data_dir>/admin-token
    registries: list[RegistryConfig] = Field(default_factory=lambda: [RegistryConfig(name="embedded")])
    debounce: Debounce = Field(default_factory=lambda: Debounce(quiet_ms=100, max_delay_ms=1000))
    grace_s: float = Field(2.0, ge=0, le=300)
    sync: SyncConfig = Field(default_factory=lambda: SyncConfig(resync_interval_s=5.0))
    config_store: ConfigStoreConfig = Field(default_factory=ConfigStoreConfig)
    ca: CaConfig = Field(default_factory=lambda: CaConfig())
    jwks: JwksConfig = Field(default_factory=lambda: JwksConfig(refresh_s=1200.0, retry_s=5.0, timeout_s=5.0))
    dashboard: DashboardConfig = Field(default_factory=lambda: DashboardConfig(
        scrape_interval_s=5.0, scrape_timeout_s=1.0, max_proxies_per_scrape=100, rate_window_s=30.0))

    @model_validator(mode="after")
    def _registries(self) -> PilotConfig:
        if not self.registries:
            raise ValueError("registries: at least one registry is needed")
        names = [r.name for r in self.registries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"registries: duplicate name(s) {', '.join(dup)}")
        if sum(1 for r in self.registries if r.writable) > 1:
            raise ValueError("registries: at most one registry may be writable: true")
        for pair in self.sync.pairs:
            for end in (pair.source, pair.target):
                if end not in names:
                    raise ValueError(f"sync.pairs: unknown registry {end!r} (known: {', '.join(names)})")
            if pair.source == pair.target:
                raise ValueError(f"sync.pairs: {pair.source!r} cannot sync with itself")
        return self


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(data: Any) -> PilotConfig:
    """Validate a config mapping; every error carries its YAML path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"the Pilot config must be a mapping, got {type(data).__name__}")
    try:
        return PilotConfig.model_validate(data)
    except ValidationError as exc:
        errors = [ConfigError(_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigErrors(errors) from None


def load(path: Path) -> PilotConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not YAML: {exc}") from None
    return parse(data)


__all__ = ["CaConfig", "ConfigStoreConfig", "Debounce", "Endpoint", "JwksConfig", "PilotConfig", "RegistryConfig",
           "SyncConfig", "SyncPairConfig", "XdsTlsConfig", "load", "parse", "split_address"]
