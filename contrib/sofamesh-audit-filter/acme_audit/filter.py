"""acme.audit: a per-tenant audit log and a per-tenant call budget, as an in-house sofamesh filter.

The tenant comes from a request header (HTTP header, Bolt header map, Dubbo attachment: whatever
the codec exposes through ``RequestHead.key``). Each tenant may make ``calls`` calls per
``window_s`` seconds; over that, the call is answered by the proxy with "rate limited" in the
request's own protocol. Every finished call is one JSON line in the audit log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.errors import ConfigError
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, LocalReply, Verdict

if TYPE_CHECKING:
    from sofamesh.core.proxy.stream import Stream

RECORD_FORMAT = 1  # bumped when the audit record's fields change
_ATTR = "acme.audit"


@dataclass(frozen=True, slots=True)
class AuditSettings:
    tenant_header: str = "x-tenant"
    default_tenant: str = "-"
    require_tenant: bool = False
    calls: int = 0  # per tenant per window; 0 = no budget
    window_s: float = 1.0
    tenant_calls: Mapping[str, int] | None = None  # per-tenant overrides of ``calls``
    log: str | None = None  # JSON-lines file; None = count only
    flush_records: int = 100
    flush_interval_s: float = 1.0


def parse_settings(config: Mapping[str, Any], path: str) -> AuditSettings:
    """Validate the YAML ``config`` mapping; every error names its key under ``path``."""
    known = {"tenant_header", "default_tenant", "require_tenant", "budget", "tenants", "log", "flush_records",
             "flush_interval_s"}
    for key in config:
        if key not in known:
            raise ConfigError(f"{path}.config.{key}", f"unknown key (known: {', '.join(sorted(known))})")

    def typed(key: str, kind: type | tuple[type, ...], default: Any, where: Mapping[str, Any] = config,
              at: str = f"{path}.config") -> Any:
        value = where.get(key, default)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{at}.{key}", f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    budget = typed("budget", dict, {})
    calls = typed("calls", int, 0, budget, f"{path}.config.budget")
    window = float(typed("window_s", (int, float), 1.0, budget, f"{path}.config.budget"))
    if calls < 0 or window <= 0:
        raise ConfigError(f"{path}.config.budget", f"calls must be >= 0 and window_s > 0 (got {calls}, {window})")
    tenants: dict[str, int] = {}
    for name, spec in typed("tenants", dict, {}).items():
        n = typed("calls", int, -1, spec if isinstance(spec, dict) else {"calls": spec},
                  f"{path}.config.tenants.{name}")
        if n < 0:
            raise ConfigError(f"{path}.config.tenants.{name}.calls", f"must be >= 0, got {n}")
        tenants[str(name)] = n
    header = typed("tenant_header", str, "x-tenant")
    if not header:
        raise ConfigError(f"{path}.config.tenant_header", "must not be empty")
    log = typed("log", (str, type(None)), None)
    flush = typed("flush_records", int, 100)
    if flush < 1:
        raise ConfigError(f"{path}.config.flush_records", f"must be >= 1, got {flush}")
    return AuditSettings(header, typed("default_tenant", str, "-"), typed("require_tenant", bool, False), calls,
                         window, tenants, log, flush, float(typed("flush_interval_s", (int, float), 1.0)))


class AuditFilter(Filter):
    """One configured ``acme.audit``; shared by every stream of its listener or route."""

    name = "acme.audit"

    def __init__(self, settings: AuditSettings) -> None:
        self.settings = settings
        self._windows: dict[str, tuple[float, int]] = {}  # tenant -> (window start, calls in it)
        self._limits = dict(settings.tenant_calls or {})
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self._file: IO[str] | None = None  # opened at the first flush: a refused config opens nothing
        self._closed = False
        self.allowed: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def on_request_head(self, stream: Stream) -> FilterResult:
        s = self.settings
        tenant = stream.head.key(s.tenant_header)
        if not tenant:
            if s.require_tenant:
                stream.context.attrs[_ATTR] = (s.default_tenant, "no_tenant")
                return LocalReply(ReplyStatus.UNAUTHENTICATED, f"acme.audit: header {s.tenant_header!r} is required")
            tenant = s.default_tenant
        limit = self._limits.get(tenant, s.calls)
        if limit or tenant in self._limits:
            now = stream.context.start
            start, n = self._windows.get(tenant, (now, 0))
            if now - start >= s.window_s:
                start, n = now, 0
            if n >= limit:
                self.refused[tenant] = self.refused.get(tenant, 0) + 1
                stream.context.attrs[_ATTR] = (tenant, "over_budget")
                return LocalReply(ReplyStatus.RATE_LIMITED,
                                  f"acme.audit: tenant {tenant!r} is over its budget of {limit} calls "
                                  f"per {s.window_s:g} s")
            self._windows[tenant] = (start, n + 1)
        self.allowed[tenant] = self.allowed.get(tenant, 0) + 1
        stream.context.attrs[_ATTR] = (tenant, "allowed")
        return Verdict.CONTINUE

    def on_stream_done(self, stream: Stream) -> None:
        if self.settings.log is None or self._closed:
            return
        tenant, outcome = stream.context.attrs.get(_ATTR, (self.settings.default_tenant, "not_seen"))
        head, ctx = stream.head, stream.context
        self._pending.append(json.dumps({
            "format": RECORD_FORMAT, "ts": round(time.time(), 3), "tenant": tenant, "outcome": outcome,
            "listener": ctx.listener, "protocol": head.protocol, "service": head.service, "method": head.method,
            "path": head.path, "route": ctx.route, "cluster": ctx.cluster, "http_status": stream.http_status,
            "flags": ctx.response_flags}, separators=(",", ":")))
        if (len(self._pending) >= self.settings.flush_records
                or time.monotonic() - self._last_flush >= self.settings.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        if not self._pending or self.settings.log is None:
            return
        f = self._file
        if f is None:
            f = self._file = open(self.settings.log, "a", encoding="utf-8")
        f.write("\n".join(self._pending) + "\n")
        f.flush()
        self._pending.clear()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


class AuditFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> AuditFilter:
        return AuditFilter(parse_settings(config, path))


__all__ = ["RECORD_FORMAT", "AuditFilter", "AuditFilterFactory", "AuditSettings", "parse_settings"]
