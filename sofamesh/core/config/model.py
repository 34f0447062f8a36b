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
        _check_regex(self.regex)
        return self


def _check_regex(regex: str | None) -> None:
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"bad regex {regex!r}: {exc}") from None


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
    query: dict[str, StringMatch] = Field(default_factory=dict)  # HTTP query parameters (present: regex ".*")


class WeightedCluster(_Model):
    name: str
    weight: Annotated[int, Field(ge=0)] = 1


class FilterConfig(_Model):
    type: str
    config: dict[str, Any] = Field(default_factory=dict)


class HeaderMutationConfig(_Model):
    """Headers a route changes (Envoy's ``*_headers_to_add`` / ``*_headers_to_remove``): ``remove``
    first, then ``set`` (replace or add), then ``add`` (append)."""

    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class RewriteConfig(_Model):
    """What a route rewrites before forwarding: the matched path prefix (the whole path for an exact
    or regex match) with ``prefix``, or each ``regex`` match in the path with ``substitution``;
    the host (HTTP/1 ``Host``, HTTP/2 ``:authority``) with ``host``."""

    prefix: str | None = None
    regex: str | None = None
    substitution: str = ""
    host: str | None = None

    @model_validator(mode="after")
    def _one_path_rewrite(self) -> RewriteConfig:
        if self.prefix is not None and self.regex is not None:
            raise ValueError("give at most one of prefix, regex")
        _check_regex(self.regex)
        return self


class RedirectConfig(_Model):
    """An HTTP redirect answered by the proxy (Envoy's ``redirect``): each given part replaces the
    request's own in ``Location``."""

    scheme: str | None = None
    host: str | None = None
    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    path: str | None = None
    prefix: str | None = None  # replaces the matched prefix, as ``prefix_rewrite`` does
    strip_query: bool = False
    code: Literal[301, 302, 303, 307, 308] = 301


class DirectResponseConfig(_Model):
    """A response the proxy answers itself (Envoy's ``direct_response``); RPC protocols answer an
    error in their own protocol."""

    status: Annotated[int, Field(ge=200, le=599)]
    body: str = ""


class MirrorConfig(_Model):
    """A copy of each matching request to ``cluster`` (a share ``percentage`` of them), fire and
    forget: its response is discarded; an HTTP copy's host gets the suffix ``-shadow``."""

    cluster: str
    percentage: Annotated[float, Field(ge=0, le=100)] = 100.0


class RouteConfig(_Model):
    name: str = ""
    match: RouteMatch = Field(default_factory=RouteMatch)
    cluster: str | None = None
    weighted_clusters: list[WeightedCluster] = Field(default_factory=list)
    timeout_ms: Annotated[int, Field(ge=0)] = 15000  # 0 = no timeout; Envoy's default is 15 s
    filters: list[FilterConfig] = Field(default_factory=list)
    direct_response: DirectResponseConfig | None = None
    redirect: RedirectConfig | None = None
    request_headers: HeaderMutationConfig | None = None
    response_headers: HeaderMutationConfig | None = None
    rewrite: RewriteConfig | None = None
    mirror: list[MirrorConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _destination(self) -> RouteConfig:
        local = (self.direct_response is not None) + (self.redirect is not None)
        if local > 1:
            raise ValueError("give at most one of direct_response, redirect")
        if (self.cluster is None) == (not self.weighted_clusters) and not local:
            raise ValueError("give exactly one of cluster or weighted_clusters")
        return self


class TlsConfig(_Model):
    cert: str
    key: str
    ca: str | None = None
    require_client_cert: bool = False
    alpn: list[str] = Field(default_factory=list)


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


class ProxyConfig(_Model):
    """The whole data-plane config."""

    admin: AdminConfig | None = Field(default_factory=AdminConfig)
    xds: XdsConfig | None = None
    listeners: list[ListenerConfig] = Field(default_factory=list)
    clusters: list[ClusterConfig] = Field(default_factory=list)
    drain_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    plugins: list[str] = Field(default_factory=list)  # extra plugin names to load (lifecycle plugins)
    # settings of lifecycle plugins, by plugin name (each key also loads that plugin); the plugin
    # validates its own section at start-up
    extensions: dict[str, dict[str, Any]] = Field(default_factory=dict)


__all__ = [
    "AdminConfig",
    "ClusterConfig",
    "DirectResponseConfig",
    "EndpointConfig",
    "FilterConfig",
    "HeaderMutationConfig",
    "HealthConfig",
    "LimitsConfig",
    "ListenerConfig",
    "MirrorConfig",
    "ProxyConfig",
    "RedirectConfig",
    "RewriteConfig",
    "RouteConfig",
    "RouteMatch",
    "StringMatch",
    "TlsConfig",
    "WeightedCluster",
    "XdsConfig",
    "parse_address",
]
