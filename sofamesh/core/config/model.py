"""Typed config models (pydantic v2). Shapes only: names are checked against catalogs in ``validate``."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port). Raises ValueError naming what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"address must be a string HOST:PORT, got {value!r}")
    if value.startswith("["):
        host, sep, port_s = value[1:].partition("]:")
    else:
        host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {value!r} is not HOST:PORT")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"address {value!r}: port {port_s!r} is not 0..65535")
    if ":" in host:
        ipaddress.IPv6Address(host)
    return host, int(port_s)


def _check_address(value: Any) -> str:
    parse_address(value)
    return str(value)


Address = Annotated[str, BeforeValidator(_check_address)]
"""A ``HOST:PORT`` string, checked by ``parse_address``."""


class StringMatch(_Model):
    """Exactly one of exact / prefix / suffix / regex; a plain string in YAML means exact."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    invert: bool = False

    @model_validator(mode="before")
    @classmethod
    def _plain_string(cls, value: Any) -> Any:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return {"exact": str(value)}
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        kinds = [k for k in ("exact", "prefix", "suffix", "regex") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of exact, prefix, suffix, regex (got {kinds or 'none'})")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"bad regex {self.regex!r}: {exc}") from None
        return self


class RouteMatch(_Model):
    """Every given key must match. HTTP keys: host, path, method; RPC keys: service, method,
    version, group; any header / header-map key / attachment under ``headers``."""

    service: StringMatch | None = None
    method: StringMatch | None = None
    version: StringMatch | None = None
    group: StringMatch | None = None
    host: StringMatch | None = None
    path: StringMatch | None = None
    protocol: str | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)


class WeightedCluster(_Model):
    name: str
    weight: Annotated[int, Field(ge=0)] = 1


class FilterConfig(_Model):
    type: str
    config: dict[str, Any] = Field(default_factory=dict)


class RouteConfig(_Model):
    name: str = ""
    match: RouteMatch = Field(default_factory=RouteMatch)
    cluster: str | None = None
    weighted_clusters: list[WeightedCluster] = Field(default_factory=list)
    timeout_ms: Annotated[int, Field(ge=0)] = 15000  # 0 = no timeout; Envoy's default is 15 s
    filters: list[FilterConfig] = Field(default_factory=list)
    direct_response: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _destination(self) -> RouteConfig:
        if (self.cluster is None) == (not self.weighted_clusters) and self.direct_response is None:
            raise ValueError("give exactly one of cluster or weighted_clusters")
        return self


class TlsConfig(_Model):
    """Files (``cert``/``key``, ``ca``) or secrets the process's agent keeps current, by SDS name
    (``secret: default``, ``ca_secret: ROOTCA``); each side may mix a file and a secret."""

    cert: str | None = None
    key: str | None = None
    secret: str | None = None
    ca: str | None = None
    ca_secret: str | None = None
    require_client_cert: bool = False
    alpn: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> TlsConfig:
        if self.secret is None and (self.cert is None or self.key is None):
            raise ValueError("give cert and key (files), or secret (an SDS name such as default)")
        if self.secret is not None and (self.cert is not None or self.key is not None):
            raise ValueError("give either cert and key, or secret, not both")
        if self.ca is not None and self.ca_secret is not None:
            raise ValueError("give either ca or ca_secret, not both")
        return self


class LimitsConfig(_Model):
    max_frame_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    max_header_bytes: Annotated[int, Field(gt=0)] = 64 * 1024
    max_headers: Annotated[int, Field(gt=0)] = 200
    max_body_bytes: Annotated[int, Field(ge=0)] = 0


class ListenerConfig(_Model):
    name: str = ""
    address: Address
    protocols: list[str] | Literal["auto"] = "auto"
    filters: list[FilterConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    idle_timeout_ms: Annotated[int, Field(ge=0)] = 300_000
    tls: TlsConfig | None = None

    @field_validator("protocols", mode="before")
    @classmethod
    def _protocols(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto":
            return [value]
        return value


class EndpointConfig(_Model):
    address: Address
    weight: Annotated[int, Field(ge=1, le=10_000)] = 1
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"address": value}
        return value


class HealthConfig(_Model):
    """Passive health: an endpoint that fails to connect ``consecutive_failures`` times is ejected
    for ``ejection_ms`` (doubling while it keeps failing, up to 10x)."""

    consecutive_failures: Annotated[int, Field(ge=1)] = 1
    ejection_ms: Annotated[int, Field(ge=0)] = 2000


class ClusterConfig(_Model):
    name: str
    protocol: str | None = None
    lb: str = "round_robin"
    connect_timeout_ms: Annotated[int, Field(gt=0)] = 1000
    idle_timeout_ms: Annotated[int, Field(ge=0)] = 60_000
    max_connections_per_endpoint: Annotated[int, Field(ge=1)] = 1024
    heartbeat_interval_ms: Annotated[int, Field(ge=0)] = 30_000
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    health: HealthConfig = Field(default_factory=HealthConfig)
    tls: TlsConfig | None = None


class AdminConfig(_Model):
    address: Address = "127.0.0.1:9901"


class XdsConfig(_Model):
    """Where the sidecar takes its listeners, routes, clusters and endpoints from (docs/xds.md)."""

    address: Address
    node_id: str
    cluster: str = ""
    mode: Literal["sotw", "delta"] = "sotw"
    metadata: dict[str, Any] = Field(default_factory=dict)
    initial_fetch_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    backoff_initial_ms: Annotated[int, Field(gt=0)] = 200
    backoff_max_ms: Annotated[int, Field(gt=0)] = 5_000


class AgentConfig(_Model):
    """The workload agent inside the proxy (docs/security.md): it gets this process's certificate
    from Pilot's CA and keeps the secrets ``default`` and ``ROOTCA`` current."""

    ca_address: Address | None = None  # Pilot's xDS port; default: xds.address
    token: str | None = None
    token_file: str | None = None
    namespace: str | None = None  # default: node metadata NAMESPACE, else the token's identity
    service_account: str | None = None  # default: node metadata SERVICE_ACCOUNT, else the token's identity
    trust_domain: str | None = None  # default: the token's
    validity_s: Annotated[int, Field(ge=0)] = 0  # 0: the CA's default lifetime

    @model_validator(mode="after")
    def _credential(self) -> AgentConfig:
        if self.token is None and self.token_file is None:
            raise ValueError("give token or token_file (sofamesh pilot token create)")
        if (self.namespace is None) != (self.service_account is None):
            raise ValueError("give both namespace and service_account, or neither")
        return self


class ProxyConfig(_Model):
    """The whole data-plane config."""

    admin: AdminConfig | None = Field(default_factory=AdminConfig)
    xds: XdsConfig | None = None
    agent: AgentConfig | None = None
    listeners: list[ListenerConfig] = Field(default_factory=list)
    clusters: list[ClusterConfig] = Field(default_factory=list)
    drain_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    plugins: list[str] = Field(default_factory=list)  # extra plugin names to load (lifecycle plugins)
    # settings of lifecycle plugins, by plugin name (each key also loads that plugin); the plugin
    # validates its own section at start-up
    extensions: dict[str, dict[str, Any]] = Field(default_factory=dict)


__all__ = [
    "AdminConfig",
    "AgentConfig",
    "ClusterConfig",
    "EndpointConfig",
    "FilterConfig",
    "HealthConfig",
    "LimitsConfig",
    "ListenerConfig",
    "ProxyConfig",
    "RouteConfig",
    "RouteMatch",
    "StringMatch",
    "TlsConfig",
    "WeightedCluster",
    "XdsConfig",
    "parse_address",
]
