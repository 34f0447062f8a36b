"""Typed config models (pydantic v2). Shapes only: names are checked against catalogs in ``validate``."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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
    """Exactly one of exact / prefix / suffix / regex; a plain string in YAML means exact.
    ``ignore_case`` (exact / prefix / suffix; Envoy's StringMatcher ``ignore_case``); ``invert``
    negates; ``missing_as_empty`` matches an absent header as the empty string (Envoy's
    ``treat_missing_header_as_empty``), otherwise an absent value matches nothing before ``invert``."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    invert: bool = False
    ignore_case: bool = False
    missing_as_empty: bool = False

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


class HeaderMutationConfig(_Model):
    """Headers a route changes (Envoy's ``*_headers_to_add`` / ``*_headers_to_remove``): ``remove``
    first, then ``set`` (replace or add), then ``add`` (append)."""

    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class WeightedCluster(_Model):
    """One destination of a split; ``request_headers`` / ``response_headers`` change the HTTP messages
    of the requests sent to it (Envoy's per-ClusterWeight mutations), before the route's own."""

    name: str
    weight: Annotated[int, Field(ge=0)] = 1
    request_headers: HeaderMutationConfig | None = None
    response_headers: HeaderMutationConfig | None = None


class FilterConfig(_Model):
    type: str
    config: dict[str, Any] = Field(default_factory=dict)


RETRY_ON: tuple[str, ...] = (
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable", "retriable",
)
"""Envoy's ``retry_on`` conditions sofamesh applies (HTTP, then gRPC), plus ``retriable``: an RPC
response its codec marks safe to send again (``Failure.RETRIABLE``)."""


class RetryBackOffConfig(_Model):
    base_interval_ms: Annotated[int, Field(gt=0)] = 25
    max_interval_ms: Annotated[int, Field(gt=0)] | None = None  # default: 10 x base_interval_ms

    @model_validator(mode="after")
    def _order(self) -> RetryBackOffConfig:
        if self.max_interval_ms is not None and self.max_interval_ms < self.base_interval_ms:
            raise ValueError(f"max_interval_ms {self.max_interval_ms} is below base_interval_ms "
                             f"{self.base_interval_ms}")
        return self


class RetryPolicyConfig(_Model):
    """Envoy's route ``retry_policy`` (docs/configuration.md, "Retries")."""

    retry_on: list[str] = Field(default_factory=list)
    num_retries: Annotated[int, Field(ge=0)] = 1
    per_try_timeout_ms: Annotated[int, Field(ge=0)] = 0  # 0 = only the route timeout
    retriable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list)
    retry_back_off: RetryBackOffConfig = Field(default_factory=RetryBackOffConfig)
    previous_hosts: bool = True  # Envoy's retry_host_predicate envoy.retry_host_predicates.previous_hosts
    include_attempt_count: bool = True  # x-envoy-attempt-count on HTTP requests (Envoy: include_request_attempt_count)
    per_request_buffer_limit_bytes: Annotated[int, Field(ge=0)] = 1024 * 1024  # request kept for replay

    @field_validator("retry_on", mode="before")
    @classmethod
    def _conditions(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            for v in value:
                if v not in RETRY_ON:
                    raise ValueError(f"unknown retry_on condition {v!r} (known: {', '.join(RETRY_ON)})")
        return value


class HashHeader(_Model):
    header_name: Annotated[str, Field(min_length=1)]


class HashCookie(_Model):
    name: Annotated[str, Field(min_length=1)]


class HashConnectionProperties(_Model):
    source_ip: bool = False


class HashQueryParameter(_Model):
    name: Annotated[str, Field(min_length=1)]


class HashArgument(_Model):
    index: Annotated[int, Field(ge=0)] = 0


class HashPolicyConfig(_Model):
    """One of Envoy's route ``hash_policy`` entries: exactly one of ``header`` (an HTTP header, an
    RPC header-map key or attachment), ``cookie``, ``connection_properties``, ``query_parameter``,
    or sofamesh's ``argument`` (an RPC request's argument, as Dubbo's ConsistentHashLoadBalance)."""

    header: HashHeader | None = None
    cookie: HashCookie | None = None
    connection_properties: HashConnectionProperties | None = None
    query_parameter: HashQueryParameter | None = None
    argument: HashArgument | None = None
    terminal: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> HashPolicyConfig:
        kinds = [k for k in HASH_POLICY_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(HASH_POLICY_KINDS)} (got {kinds or 'none'})")
        return self


HASH_POLICY_KINDS: tuple[str, ...] = ("header", "cookie", "connection_properties", "query_parameter", "argument")
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
    # a scheme change keeps the request's port too (Envoy's ``require_tls`` redirect sends
    # ``https://`` + the request's Host + path); otherwise it drops it, as a route's ``redirect`` does
    keep_port: bool = False


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
    retry_policy: RetryPolicyConfig | None = None  # None: a failed connect is retried on another endpoint
    hash_policy: list[HashPolicyConfig] = Field(default_factory=list)  # for ring_hash / maglev clusters

    @model_validator(mode="after")
    def _destination(self) -> RouteConfig:
        local = (self.direct_response is not None) + (self.redirect is not None)
        if local > 1:
            raise ValueError("give at most one of direct_response, redirect")
        if (self.cluster is None) == (not self.weighted_clusters) and not local:
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
    # also serve plaintext connections on this listener (told apart from TLS by their first byte),
    # as Istio's PERMISSIVE mode does; authn.mtls PERMISSIVE then sees both kinds of client
    plaintext: bool = False
    # clusters only: the URI SANs (SPIFFE ids) an upstream's verified certificate may name, exact or
    # ``prefix*``; a connection to a peer naming none of them is closed before a byte is sent
    # (Envoy's match_subject_alt_names, which Istio's auto mTLS sets to the destination's identities);
    # a DNS name (a DestinationRule's subjectAltNames) matches the certificate's DNS SANs
    match_sans: list[str] = Field(default_factory=list)
    # clusters only: the server name sent (SNI); default the endpoint's host
    sni: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TlsConfig:
        if self.secret is None and (self.cert is None) != (self.key is None):
            raise ValueError("give cert and key together (files), or secret (an SDS name such as default)")
        if self.secret is not None and (self.cert is not None or self.key is not None):
            raise ValueError("give either cert and key, or secret, not both")
        if self.ca is not None and self.ca_secret is not None:
            raise ValueError("give either ca or ca_secret, not both")
        return self


_SERVER_NAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class TlsServerConfig(_Model):
    """One TLS server of a listener that serves several (Envoy's filter chains chosen by
    ``server_names``, Istio's Gateway servers on one port): the certificate and client-certificate
    rules for connections whose ClientHello asks for one of ``server_names`` (exact, or ``*.suffix``
    for any name under it); no ``server_names``: the connections no other server names, and those
    without SNI."""

    server_names: list[str] = Field(default_factory=list)
    tls: TlsConfig | None = None
    # instead of ``tls``: the connection's TLS is not terminated but passed through, its bytes to
    # this route's ``cluster`` / ``weighted_clusters`` (Envoy's tcp_proxy chain; Istio's PASSTHROUGH
    # server next to terminating ones on one port)
    passthrough: RouteConfig | None = None

    @model_validator(mode="after")
    def _terminates_or_passes(self) -> TlsServerConfig:
        if (self.tls is None) == (self.passthrough is None):
            raise ValueError("give exactly one of tls (terminate) or passthrough (a route to pass TLS through to)")
        if self.passthrough is not None and not self.server_names:
            raise ValueError("a passthrough server needs server_names")
        return self

    @field_validator("server_names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        out = []
        for name in value:
            low = name.lower()
            if not _SERVER_NAME.match(low):
                raise ValueError(f"server name {name!r} is not a host name or *.suffix")
            out.append(low)
        return out

    @field_validator("tls")
    @classmethod
    def _serves_a_certificate(cls, value: TlsConfig | None) -> TlsConfig | None:
        if value is None:
            return value
        if value.secret is None and value.cert is None:
            raise ValueError("a TLS server needs cert and key (files), or secret (an SDS name such as default)")
        if value.plaintext:
            raise ValueError("plaintext is a listener's tls setting, not a TLS server's")
        return value


class TlsMatchConfig(_Model):
    """One of Envoy's ``transport_socket_matches``: an endpoint whose labels hold every key and
    value of ``match`` connects with ``tls`` (none: plaintext). The first match wins; an endpoint
    no entry matches uses the cluster's ``tls``. Istio's per-endpoint auto mTLS is two of them."""

    name: str = ""
    match: dict[str, str] = Field(default_factory=dict)
    tls: TlsConfig | None = None


class LimitsConfig(_Model):
    max_frame_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    max_header_bytes: Annotated[int, Field(gt=0)] = 64 * 1024
    max_headers: Annotated[int, Field(gt=0)] = 200
    max_body_bytes: Annotated[int, Field(ge=0)] = 0


class KeepaliveConfig(_Model):
    """Envoy's ``http2_protocol_options.connection_keepalive``, for every multiplexed protocol: a
    connection that sent nothing for ``interval_ms`` is pinged (HTTP/2 PING, Bolt and Dubbo
    heartbeats) and closed when nothing at all arrives within ``timeout_ms`` of the ping."""

    interval_ms: Annotated[int, Field(ge=0)] = 30_000  # 0: no pings on silence (connection_idle_interval_ms only)
    timeout_ms: Annotated[int, Field(gt=0)] = 20_000  # gRPC's keepalive timeout default
    # Envoy's interval_jitter: each wait is interval_ms plus up to this percent of it, drawn anew
    # each time, so the pings of many connections spread out (Envoy's default of 15)
    interval_jitter_percent: Annotated[float, Field(ge=0, le=100)] = 15.0
    # Envoy's connection_idle_interval (upstream connections, ``clusters[]``): a request about to go
    # on a connection that received nothing for this long is preceded by a ping, and the connection
    # is closed if nothing arrives within timeout_ms; 0: off
    connection_idle_interval_ms: Annotated[int, Field(ge=0)] = 0


# SETTINGS identifiers (RFC 9113 6.5.2) a named field of ``http2_protocol_options`` sends, and the
# ranges Envoy's validation gives those fields
_NAMED_SETTINGS: dict[int, tuple[str, int, int]] = {
    0x1: ("hpack_table_size", 0, 2**32 - 1),
    0x3: ("max_concurrent_streams", 1, 2**31 - 1),
    0x4: ("initial_stream_window_size", 65_535, 2**31 - 1),
}


def h2_custom_settings(params: list[tuple[int, int]], named: set[str]) -> tuple[dict[str, int], list[tuple[int, int]]]:
    """Envoy's checks of ``custom_settings_parameters`` (``params``, (identifier, value) pairs) given
    the named fields set (``named``): the named fields a parameter stands for (its identifier's
    field is not set: SETTINGS_HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, then
    enforced as that field) and the parameters left to send as they are. A parameter whose named
    field is set too, the same identifier with two values, ENABLE_PUSH=1 (we never push) and
    ENABLE_CONNECT_PROTOCOL (``allow_connect``'s) raise ``ValueError`` naming the identifier, as
    Envoy's validation; so do SETTINGS_MAX_FRAME_SIZE outside RFC 9113's 16384..2^24-1 (ours is
    enforced too) and SETTINGS_MAX_HEADER_LIST_SIZE (ours is the listener's
    ``limits.max_header_bytes``)."""
    seen: dict[int, int] = {}
    for ident, value in params:
        if not 0 <= ident <= 0xFFFF:
            raise ValueError(f"identifier {ident} is out of range 0..65535")
        if not 0 <= value <= 2**32 - 1:
            raise ValueError(f"identifier 0x{ident:x}: value {value} is out of range 0..4294967295")
        if seen.setdefault(ident, value) != value:
            raise ValueError(f"identifier 0x{ident:x} is given twice with different values ({seen[ident]}, {value})")
    fields: dict[str, int] = {}
    rest: list[tuple[int, int]] = []
    for ident, value in seen.items():
        if ident == 0x2 and value:
            raise ValueError("identifier 0x2 (SETTINGS_ENABLE_PUSH) = 1: server push is not supported")
        if ident == 0x8:
            raise ValueError("identifier 0x8 (SETTINGS_ENABLE_CONNECT_PROTOCOL) is set only through allow_connect")
        if ident == 0x6:
            raise ValueError("identifier 0x6 (SETTINGS_MAX_HEADER_LIST_SIZE) is not supported: a listener's "
                             "limits.max_header_bytes sets it")
        if ident == 0x5 and not 16_384 <= value <= 2**24 - 1:
            raise ValueError(f"identifier 0x5 (SETTINGS_MAX_FRAME_SIZE): {value} is out of range 16384..16777215")
        field = _NAMED_SETTINGS.get(ident)
        if field is None:
            rest.append((ident, value))
            continue
        name, low, high = field
        if name in named:
            raise ValueError(f"identifier 0x{ident:x} is also the named field {name}: give one of them")
        if not low <= value <= high:
            raise ValueError(f"identifier 0x{ident:x} ({name}): {value} is out of range {low}..{high}")
        fields[name] = value
    return fields, rest


class SettingsParameterConfig(_Model):
    """One of Envoy's ``custom_settings_parameters``: an entry of our SETTINGS frame."""

    identifier: Annotated[int, Field(ge=0, le=0xFFFF)]
    value: Annotated[int, Field(ge=0, le=2**32 - 1)]


class Http2ProtocolOptionsConfig(_Model):
    """Envoy's ``http2_protocol_options`` (its field names and ranges) for a listener's downstream or a
    cluster's upstream HTTP/2 connections; an absent field keeps the codec's default (which are not
    all Envoy's: 1024 streams, 256 KiB per stream, 16 MiB per connection; docs/protocols.md)."""

    max_concurrent_streams: Annotated[int, Field(ge=1, le=2**31 - 1)] = 1024
    initial_stream_window_size: Annotated[int, Field(ge=65_535, le=2**31 - 1)] = 256 * 1024
    initial_connection_window_size: Annotated[int, Field(ge=65_535, le=2**31 - 1)] = 16 * 1024 * 1024
    max_outbound_frames: Annotated[int, Field(ge=1)] = 10_000
    max_outbound_control_frames: Annotated[int, Field(ge=1)] = 1000
    max_consecutive_inbound_frames_with_empty_payload: Annotated[int, Field(ge=0)] = 1
    max_inbound_priority_frames_per_stream: Annotated[int, Field(ge=0)] = 100
    max_inbound_window_update_frames_per_data_frame_sent: Annotated[int, Field(ge=1)] = 10
    hpack_table_size: Annotated[int, Field(ge=0, le=2**32 - 1)] = 4096  # 0: the peer indexes nothing
    # more entries of our SETTINGS frame (Envoy's checks: ``h2_custom_settings``); one for
    # SETTINGS_HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS or INITIAL_WINDOW_SIZE sets that named field
    custom_settings_parameters: list[SettingsParameterConfig] = Field(default_factory=list)
    # Envoy's: an invalid HTTP message (RFC 9113 8.2, 8.3: an upper-case or connection-specific
    # header, a bad pseudo-header) resets its stream alone (true) or ends the whole connection with
    # GOAWAY(PROTOCOL_ERROR) (false, the default). Unset: the deprecated field below decides
    override_stream_error_on_invalid_http_message: bool | None = None
    stream_error_on_invalid_http_messaging: bool = False  # Envoy's deprecated spelling of the same
    allow_connect: bool = False  # RFC 8441 extended CONNECT: not supported, true is refused

    @model_validator(mode="before")
    @classmethod
    def _custom_settings(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value.get("custom_settings_parameters"):
            return value
        raw = value["custom_settings_parameters"]
        if not isinstance(raw, list):
            return value  # the field's own validation names it
        params = []
        for p in raw:
            if not isinstance(p, dict) or not all(isinstance(p.get(k), int) for k in ("identifier", "value")):
                return value  # the fields' own validation names what is wrong
            params.append((p["identifier"], p["value"]))
        try:
            fields, rest = h2_custom_settings(params, set(value))
        except ValueError as exc:
            raise ValueError(f"custom_settings_parameters: {exc}") from None
        return {**value, **fields, "custom_settings_parameters": [{"identifier": i, "value": v} for i, v in rest]}

    @field_validator("allow_connect")
    @classmethod
    def _no_connect(cls, value: bool) -> bool:
        if value:
            raise ValueError("RFC 8441 extended CONNECT (allow_connect: true) is not supported")
        return value

    @property
    def stream_error_on_invalid_http_message(self) -> bool:
        """Envoy's resolution: the override when given, else the deprecated field."""
        o = self.override_stream_error_on_invalid_http_message
        return self.stream_error_on_invalid_http_messaging if o is None else o


class ListenerConfig(_Model):
    name: str = ""
    address: Address
    protocols: list[str] | Literal["auto"] = "auto"
    filters: list[FilterConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    idle_timeout_ms: Annotated[int, Field(ge=0)] = 300_000
    # Slow peers (docs/configuration.md, "Timeouts"); 0 turns one off. A request's head (an RPC
    # frame) must arrive whole within this of its first byte (Envoy's request_headers_timeout,
    # counted the same way: bytes trickling in do not restart it)
    request_headers_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    body_idle_timeout_ms: Annotated[int, Field(ge=0)] = 60_000  # a request body that stops arriving
    stream_idle_timeout_ms: Annotated[int, Field(ge=0)] = 300_000  # Envoy's default
    max_connection_duration_ms: Annotated[int, Field(ge=0)] = 0  # Envoy's: unlimited by default
    connection_keepalive: KeepaliveConfig | None = None  # multiplexed protocols; None: no pings
    http2_protocol_options: Http2ProtocolOptionsConfig | None = None  # None: the codec's defaults
    # accepted connections this listener holds at once; one more is closed on accept
    # (Envoy's per-listener ``envoy.resource_limits.listener.<name>.connection_limit``); 0 = no limit
    max_connections: Annotated[int, Field(ge=0)] = 0
    # HTTP/1.1 Upgrade types passed through (Envoy's HCM ``upgrade_configs``): ``[websocket]``,
    # ``h2c`` too; after the upstream's 101 the request and response carry raw bytes until either side
    # closes. Any other Upgrade is answered 403 (Envoy's upgrade_failed), h2c served as HTTP/1.1
    upgrade_types: list[str] = Field(default_factory=list)
    tls: TlsConfig | None = None
    # several TLS servers on this port, the certificate (and client-certificate rules) chosen by the
    # ClientHello's server name before the handshake; instead of ``tls``
    tls_servers: list[TlsServerConfig] = Field(default_factory=list)

    @field_validator("connection_keepalive")
    @classmethod
    def _no_idle_ping(cls, value: KeepaliveConfig | None) -> KeepaliveConfig | None:
        if value is not None and value.connection_idle_interval_ms:
            raise ValueError("connection_idle_interval_ms pings ahead of the requests sofamesh sends: it applies to "
                             "clusters[].connection_keepalive, not to a listener's (as in Envoy)")
        return value

    @field_validator("tls")
    @classmethod
    def _serves_a_certificate(cls, value: TlsConfig | None) -> TlsConfig | None:
        if value is not None and value.secret is None and value.cert is None:
            raise ValueError("a listener's tls needs cert and key (files), or secret (an SDS name such as default)")
        return value

    @model_validator(mode="after")
    def _one_tls_kind(self) -> ListenerConfig:
        if self.tls is not None and self.tls_servers:
            raise ValueError("give either tls (one certificate) or tls_servers (chosen by server name), not both")
        seen: set[str] = set()
        default = 0
        for i, server in enumerate(self.tls_servers):
            default += not server.server_names
            for name in server.server_names:
                if name in seen:
                    raise ValueError(f"tls_servers[{i}].server_names: {name!r} is named by an earlier TLS server")
                seen.add(name)
        if default > 1:
            raise ValueError("at most one of tls_servers may have no server_names (the default)")
        if any(s.passthrough is not None for s in self.tls_servers) and self.protocols != "auto" and (
                "tcp" not in self.protocols):
            raise ValueError("tls_servers with passthrough need tcp among the protocols (it carries their bytes)")
        return self

    @field_validator("protocols", mode="before")
    @classmethod
    def _protocols(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto":
            return [value]
        return value


HEALTH_STATUSES: tuple[str, ...] = ("unknown", "healthy", "unhealthy", "draining", "timeout", "degraded")
"""Envoy's ``core.v3.HealthStatus`` names; ``unhealthy``, ``draining`` and ``timeout`` keep an
endpoint out of balancing (``/failed_eds_health``)."""


class EndpointConfig(_Model):
    address: Address
    weight: Annotated[int, Field(ge=1, le=10_000)] = 1
    labels: dict[str, str] = Field(default_factory=dict)  # region / zone / sub_zone name its locality
    priority: Annotated[int, Field(ge=0, le=127)] = 0  # Envoy's LocalityLbEndpoints.priority
    locality_weight: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # its locality's weight; 0 = none given
    health_status: Literal["unknown", "healthy", "unhealthy", "draining", "timeout", "degraded"] = "unknown"

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"address": value}
        return value


class HealthConfig(_Model):
    """Passive health, the form before ``outlier_detection``: an endpoint that fails to connect (or
    is reset) ``consecutive_failures`` times is ejected for ``ejection_ms``, longer while it keeps
    failing. The same as ``outlier_detection`` with ``HealthConfig.as_outlier_detection()``."""

    consecutive_failures: Annotated[int, Field(ge=1)] = 1
    ejection_ms: Annotated[int, Field(ge=0)] = 2000  # 0 = never eject

    def as_outlier_detection(self) -> OutlierDetectionConfig | None:
        """The ``outlier_detection`` this means (None when ``ejection_ms`` is 0)."""
        if not self.ejection_ms:
            return None
        return OutlierDetectionConfig(
            split_external_local_origin_errors=True, consecutive_local_origin_failure=self.consecutive_failures,
            consecutive_5xx=0, consecutive_gateway_failure=0, enforcing_success_rate=0,
            interval_ms=max(self.ejection_ms, 1000), base_ejection_time_ms=self.ejection_ms,
            max_ejection_time_ms=10 * self.ejection_ms, max_ejection_percent=100)


_Percent = Annotated[int, Field(ge=0, le=100)]


class OutlierDetectionConfig(_Model):
    """Envoy's cluster ``outlier_detection``; durations in ms, Envoy's defaults. A count of 0 turns
    that detector off."""

    consecutive_5xx: Annotated[int, Field(ge=0)] = 5
    consecutive_gateway_failure: Annotated[int, Field(ge=0)] = 5
    consecutive_local_origin_failure: Annotated[int, Field(ge=0)] = 5
    split_external_local_origin_errors: bool = False
    interval_ms: Annotated[int, Field(gt=0)] = 10_000
    base_ejection_time_ms: Annotated[int, Field(gt=0)] = 30_000
    max_ejection_time_ms: Annotated[int, Field(gt=0)] = 300_000
    max_ejection_time_jitter_ms: Annotated[int, Field(ge=0)] = 0
    max_ejection_percent: _Percent = 10
    enforcing_consecutive_5xx: _Percent = 100
    enforcing_consecutive_gateway_failure: _Percent = 0
    enforcing_consecutive_local_origin_failure: _Percent = 100
    enforcing_success_rate: _Percent = 100
    success_rate_minimum_hosts: Annotated[int, Field(ge=0)] = 5
    success_rate_request_volume: Annotated[int, Field(ge=0)] = 100
    success_rate_stdev_factor: Annotated[int, Field(ge=0)] = 1900
    enforcing_failure_percentage: _Percent = 0
    failure_percentage_threshold: _Percent = 85
    failure_percentage_minimum_hosts: Annotated[int, Field(ge=0)] = 5
    failure_percentage_request_volume: Annotated[int, Field(ge=0)] = 50


class RetryBudgetConfig(_Model):
    budget_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    min_retry_concurrency: Annotated[int, Field(ge=0)] = 3


class CircuitBreakersConfig(_Model):
    """Envoy's ``circuit_breakers.thresholds`` at the default priority."""

    max_connections: Annotated[int, Field(ge=0)] = 1024
    max_pending_requests: Annotated[int, Field(ge=0)] = 1024
    max_requests: Annotated[int, Field(ge=0)] = 1024
    max_retries: Annotated[int, Field(ge=0)] = 3
    retry_budget: RetryBudgetConfig | None = None  # when set, it limits retries instead of max_retries


class HttpHealthCheckConfig(_Model):
    """Envoy's ``http_health_check``: ``GET path`` with ``host`` (default: the cluster name)."""

    path: Annotated[str, Field(min_length=1)] = "/"
    host: str = ""
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] = "GET"
    expected_statuses: list[tuple[int, int]] = Field(default_factory=lambda: [(200, 201)])  # [start, end)
    retriable_statuses: list[tuple[int, int]] = Field(default_factory=list)
    codec_client_type: Literal["HTTP1", "HTTP2"] = "HTTP1"
    request_headers_to_add: dict[str, str] = Field(default_factory=dict)

    @field_validator("expected_statuses", "retriable_statuses", mode="before")
    @classmethod
    def _ranges(cls, value: Any) -> Any:
        if isinstance(value, list):
            out = []
            for v in value:
                if isinstance(v, int):
                    v = (v, v + 1)
                elif isinstance(v, dict):
                    v = (v.get("start"), v.get("end"))
                out.append(v)
            return out
        return value

    @model_validator(mode="after")
    def _valid_ranges(self) -> HttpHealthCheckConfig:
        for start, end in (*self.expected_statuses, *self.retriable_statuses):
            if not 100 <= start < end <= 600:
                raise ValueError(f"status range [{start}, {end}) is not within [100, 600)")
        return self


class TcpHealthCheckConfig(_Model):
    """Envoy's ``tcp_health_check``: connect, optionally send ``send`` and expect ``receive`` (hex)."""

    send: str = ""
    receive: list[str] = Field(default_factory=list)

    @field_validator("send", "receive")
    @classmethod
    def _hex(cls, value: Any) -> Any:
        for v in [value] if isinstance(value, str) else value:
            try:
                bytes.fromhex(v)
            except ValueError:
                raise ValueError(f"{v!r} is not hex text") from None
        return value


class GrpcHealthCheckConfig(_Model):
    """Envoy's ``grpc_health_check``: ``grpc.health.v1.Health/Check`` over HTTP/2."""

    service_name: str = ""
    authority: str = ""


class ProtocolHealthCheckConfig(_Model):
    """sofamesh's probe in the cluster's (or ``protocol``'s) own terms: the codec's ``health_probe``
    (Bolt and Dubbo heartbeats by default; a codec plugin may define its own)."""

    protocol: str | None = None


HEALTH_CHECK_KINDS: tuple[str, ...] = ("http_health_check", "tcp_health_check", "grpc_health_check",
                                       "protocol_health_check")


class HealthCheckConfig(_Model):
    """Envoy's cluster ``health_checks[]`` entry; durations in ms. Exactly one kind."""

    timeout_ms: Annotated[int, Field(gt=0)] = 1000
    interval_ms: Annotated[int, Field(gt=0)] = 5000
    initial_jitter_ms: Annotated[int, Field(ge=0)] = 0
    interval_jitter_ms: Annotated[int, Field(ge=0)] = 0
    interval_jitter_percent: Annotated[int, Field(ge=0, le=100)] = 0
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 1
    healthy_threshold: Annotated[int, Field(ge=1)] = 1
    no_traffic_interval_ms: Annotated[int, Field(gt=0)] = 60_000
    unhealthy_interval_ms: Annotated[int, Field(gt=0)] | None = None  # default: interval_ms
    healthy_edge_interval_ms: Annotated[int, Field(gt=0)] | None = None
    unhealthy_edge_interval_ms: Annotated[int, Field(gt=0)] | None = None
    http_health_check: HttpHealthCheckConfig | None = None
    tcp_health_check: TcpHealthCheckConfig | None = None
    grpc_health_check: GrpcHealthCheckConfig | None = None
    protocol_health_check: ProtocolHealthCheckConfig | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheckConfig:
        kinds = [k for k in HEALTH_CHECK_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(HEALTH_CHECK_KINDS)} (got {kinds or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in HEALTH_CHECK_KINDS if getattr(self, k) is not None)


class ZoneAwareLbConfig(_Model):
    """Envoy's ``common_lb_config.zone_aware_lb_config``: prefer endpoints in the caller's own zone
    (``node.locality``), compared with ``cluster_manager.local_cluster_name``'s endpoints."""

    routing_enabled: Annotated[float, Field(ge=0, le=100)] = 100.0  # percent of requests considered
    min_cluster_size: Annotated[int, Field(ge=0)] = 6  # fewer endpoints upstream: no zone routing
    fail_traffic_on_panic: bool = False  # in panic, serve no endpoint instead of all


class LocalityConfig(_Model):
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


class NodeConfig(_Model):
    """Envoy's bootstrap ``node``: where this proxy runs (zone-aware routing's local zone)."""

    locality: LocalityConfig = Field(default_factory=LocalityConfig)


class ClusterManagerConfig(_Model):
    local_cluster_name: str = ""  # the cluster of this proxy's own service (zone-aware routing)


class ClusterConfig(_Model):
    name: str
    protocol: str | None = None
    # HTTP requests' upstream protocol when ``protocol`` is unset (Envoy's explicit_http_config);
    # None: the request's own (use_downstream_protocol_config). Other protocols keep their own.
    http_protocol: Literal["http1", "http2"] | None = None
    lb: str = "round_robin"
    lb_config: dict[str, Any] = Field(default_factory=dict)  # the balancer's own settings (docs/configuration.md)
    connect_timeout_ms: Annotated[int, Field(gt=0)] = 1000
    idle_timeout_ms: Annotated[int, Field(ge=0)] = 60_000
    max_connections_per_endpoint: Annotated[int, Field(ge=1)] = 1024
    heartbeat_interval_ms: Annotated[int, Field(ge=0)] = 30_000
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    health: HealthConfig | None = None  # the older form of outlier_detection; default {1, 2000 ms}
    outlier_detection: OutlierDetectionConfig | None = None
    circuit_breakers: CircuitBreakersConfig | None = None
    healthy_panic_threshold: Annotated[float, Field(ge=0, le=100)] = 50.0  # Envoy's common_lb_config
    locality_weighted_lb: bool = False  # Envoy's common_lb_config.locality_weighted_lb_config
    zone_aware_lb: ZoneAwareLbConfig | None = None  # Envoy's common_lb_config.zone_aware_lb_config
    overprovisioning_factor: Annotated[int, Field(gt=0)] = 140  # percent; Envoy's ClusterLoadAssignment.policy
    health_checks: list[HealthCheckConfig] = Field(default_factory=list, max_length=1)  # one per cluster
    max_requests_per_connection: Annotated[int, Field(ge=0)] = 0  # 0 = unlimited
    max_connection_duration_ms: Annotated[int, Field(ge=0)] = 0  # 0 = unlimited
    http2_protocol_options: Http2ProtocolOptionsConfig | None = None  # its HTTP/2 connections; None: defaults
    # Envoy's http2_protocol_options.connection_keepalive for the upstream connections of a multiplexed
    # protocol (HTTP/2 PING, Bolt and Dubbo heartbeats), in place of heartbeat_interval_ms; None: that
    connection_keepalive: KeepaliveConfig | None = None
    tls: TlsConfig | None = None
    tls_matches: list[TlsMatchConfig] = Field(default_factory=list)  # per endpoint, before ``tls``

    @model_validator(mode="after")
    def _one_ejection_form(self) -> ClusterConfig:
        if self.health is not None and self.outlier_detection is not None:
            h = self.health
            n, ms = h.consecutive_failures, h.ejection_ms
            raise ValueError(
                "health is replaced by outlier_detection; give only outlier_detection (health: "
                f"{{consecutive_failures: {n}, ejection_ms: {ms}}} is outlier_detection: "
                f"{{consecutive_local_origin_failure: {n}, split_external_local_origin_errors: true, "
                f"base_ejection_time_ms: {ms}, consecutive_5xx: 0, consecutive_gateway_failure: 0, "
                "enforcing_success_rate: 0, max_ejection_percent: 100})")
        return self

    def ejection(self) -> OutlierDetectionConfig | None:
        """The outlier detection this cluster runs: ``outlier_detection``, else what ``health``
        (or its default) means."""
        if self.outlier_detection is not None:
            return self.outlier_detection
        return (self.health or HealthConfig()).as_outlier_detection()


class AdminConfig(_Model):
    address: Address = "127.0.0.1:9901"


class PilotTlsConfig(_Model):
    """TLS to Pilot's TLS xDS port (docs/security.md): Pilot's roots (``GET /v1/ca/roots``, PEM)
    to verify its certificate with, and the name to check it for (default: the address's host)."""

    ca: str
    server_name: str | None = None


class XdsConfig(_Model):
    """Where the sidecar takes its listeners, routes, clusters and endpoints from (docs/xds.md)."""

    address: Address
    # more management servers (Pilot replicas): when a stream fails the next one is tried at once,
    # cycling through all of them (Envoy's ApiConfigSource.grpc_services); backoff after a full round
    addresses: list[Address] = Field(default_factory=list)
    tls: PilotTlsConfig | None = None  # None: plaintext (Pilot's 15010)
    node_id: str
    cluster: str = ""
    mode: Literal["sotw", "delta"] = "sotw"
    metadata: dict[str, Any] = Field(default_factory=dict)
    initial_fetch_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    backoff_initial_ms: Annotated[int, Field(gt=0)] = 200
    backoff_max_ms: Annotated[int, Field(gt=0)] = 5_000

    @property
    def servers(self) -> list[str]:
        """``address`` then ``addresses``, without repeats: the order the client tries them in."""
        return list(dict.fromkeys([self.address, *self.addresses]))


class AgentConfig(_Model):
    """The workload agent inside the proxy (docs/security.md): it gets this process's certificate
    from Pilot's CA and keeps the secrets ``default`` and ``ROOTCA`` current."""

    ca_address: Address | None = None  # Pilot's xDS port; default: xds.address
    ca_tls: PilotTlsConfig | None = None  # default: xds.tls when ca_address is not given
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


OVERLOAD_ACTIONS: tuple[str, ...] = ("stop_accepting_connections", "reject_incoming_connections",
                                     "disable_http_keepalive", "stop_accepting_requests",
                                     "reset_high_memory_stream", "shrink_heap")
"""Envoy's ``envoy.overload_actions.*`` names (the prefix may be written or left out)."""
OVERLOAD_MONITORS: tuple[str, ...] = ("memory", "downstream_connections")


class OverloadTriggerConfig(_Model):
    """Envoy's threshold trigger: the action is on while monitor ``name``'s pressure (0..1) is at or
    over ``threshold``."""

    name: Literal["memory", "downstream_connections"]
    threshold: Annotated[float, Field(gt=0, le=1)]


class OverloadActionConfig(_Model):
    name: str
    triggers: Annotated[list[OverloadTriggerConfig], Field(min_length=1)]

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        short = value.removeprefix("envoy.overload_actions.")
        if short not in OVERLOAD_ACTIONS:
            raise ValueError(f"unknown overload action {value!r} (known: {', '.join(OVERLOAD_ACTIONS)})")
        return short


class OverloadManagerConfig(_Model):
    """Envoy's ``overload_manager``: resource monitors measured every ``refresh_interval_ms`` and
    actions triggered by their pressure. Monitors: ``memory`` (process RSS over ``max_rss_bytes``;
    Envoy's ``fixed_heap`` measures its heap) and ``downstream_connections`` (every listener's over
    ``max_active_downstream_connections``, Envoy's ``global_downstream_max_connections``, which
    is also a hard limit: one more is closed on accept). Without ``actions``, a memory monitor gets
    the ladder of docs/configuration.md."""

    refresh_interval_ms: Annotated[int, Field(gt=0)] = 1000  # Envoy's default
    max_rss_bytes: Annotated[int, Field(ge=0)] = 0
    max_active_downstream_connections: Annotated[int, Field(ge=0)] = 0
    actions: list[OverloadActionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _monitored(self) -> OverloadManagerConfig:
        limits = {"memory": ("max_rss_bytes", self.max_rss_bytes),
                  "downstream_connections": ("max_active_downstream_connections",
                                             self.max_active_downstream_connections)}
        for i, a in enumerate(self.actions):
            for t in a.triggers:
                field, value = limits[t.name]
                if not value:
                    raise ValueError(f"actions[{i}] ({a.name}) is triggered by {t.name}, which needs {field}")
        return self

    def effective_actions(self) -> list[OverloadActionConfig]:
        if self.actions or not self.max_rss_bytes:
            return list(self.actions)
        ladder = (("shrink_heap", 0.85), ("stop_accepting_connections", 0.90), ("disable_http_keepalive", 0.92),
                  ("stop_accepting_requests", 0.95), ("reset_high_memory_stream", 0.98))
        return [OverloadActionConfig(name=n, triggers=[OverloadTriggerConfig(name="memory", threshold=t)])
                for n, t in ladder]


class ProxyConfig(_Model):
    """The whole data-plane config."""

    admin: AdminConfig | None = Field(default_factory=AdminConfig)
    xds: XdsConfig | None = None
    agent: AgentConfig | None = None
    listeners: list[ListenerConfig] = Field(default_factory=list)
    clusters: list[ClusterConfig] = Field(default_factory=list)
    node: NodeConfig = Field(default_factory=NodeConfig)  # Envoy's bootstrap node (its locality)
    cluster_manager: ClusterManagerConfig = Field(default_factory=ClusterManagerConfig)
    drain_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    overload_manager: OverloadManagerConfig | None = None  # a reload applies it (Server.apply)
    # a Unix socket path: a new process started with --hot-upgrade takes this one's sockets and
    # connections over it (docs/upgrade.md); None: no hot upgrade
    upgrade_socket: str | None = None
    plugins: list[str] = Field(default_factory=list)  # extra plugin names to load (lifecycle plugins)
    # settings of lifecycle plugins, by plugin name (each key also loads that plugin); the plugin
    # validates its own section at start-up
    extensions: dict[str, dict[str, Any]] = Field(default_factory=dict)


__all__ = [
    "HASH_POLICY_KINDS",
    "HEALTH_CHECK_KINDS",
    "HEALTH_STATUSES",
    "OVERLOAD_ACTIONS",
    "OVERLOAD_MONITORS",
    "RETRY_ON",
    "AdminConfig",
    "AgentConfig",
    "CircuitBreakersConfig",
    "ClusterConfig",
    "ClusterManagerConfig",
    "DirectResponseConfig",
    "EndpointConfig",
    "FilterConfig",
    "GrpcHealthCheckConfig",
    "HashPolicyConfig",
    "HeaderMutationConfig",
    "HealthCheckConfig",
    "HealthConfig",
    "Http2ProtocolOptionsConfig",
    "HttpHealthCheckConfig",
    "KeepaliveConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LocalityConfig",
    "MirrorConfig",
    "NodeConfig",
    "OutlierDetectionConfig",
    "OverloadActionConfig",
    "OverloadManagerConfig",
    "OverloadTriggerConfig",
    "PilotTlsConfig",
    "ProtocolHealthCheckConfig",
    "ProxyConfig",
    "RedirectConfig",
    "RetryBackOffConfig",
    "RetryBudgetConfig",
    "RetryPolicyConfig",
    "RewriteConfig",
    "RouteConfig",
    "RouteMatch",
    "SettingsParameterConfig",
    "StringMatch",
    "TcpHealthCheckConfig",
    "TlsConfig",
    "TlsMatchConfig",
    "TlsServerConfig",
    "WeightedCluster",
    "XdsConfig",
    "ZoneAwareLbConfig",
    "h2_custom_settings",
    "parse_address",
]
