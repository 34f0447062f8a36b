"""``authz.rbac``: policies in the shape of Istio's AuthorizationPolicy, evaluated in the sidecar.

DENY policies are checked first: a match denies. Then, if any ALLOW policy exists, the request
must match one of them. A denial is a local reply in the request's own protocol
(``ReplyStatus.DENIED``: HTTP 403, gRPC 7, the Bolt / Dubbo permission error). In dry-run mode a
would-be denial is counted (``shadow_denied``) and logged at most once a second; the request goes on.
Everything is compiled to closures when the filter is built; a request only runs them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, LocalReply, Verdict
from sofamesh.plugins.filters.authz import matchers
from sofamesh.plugins.filters.identity import CLAIMS_ATTR, namespace_of, source_ip, source_principal
from sofamesh.plugins.filters.settings import Settings, parse

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.stream import Stream

log = logging.getLogger("sofamesh.rbac")

Pred = Callable[["Stream"], bool]
Getter = Callable[["Stream"], str]  # a field with one value per request ("" when absent)
MultiGetter = Callable[["Stream"], list[str]]  # a field that can have several values (host, a claim)

class Source(Settings):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list, alias="notPrincipals")
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list, alias="notNamespaces")
    ip_blocks: list[str] = Field(default_factory=list, alias="ipBlocks")
    not_ip_blocks: list[str] = Field(default_factory=list, alias="notIpBlocks")
    request_principals: list[str] = Field(default_factory=list, alias="requestPrincipals")
    not_request_principals: list[str] = Field(default_factory=list, alias="notRequestPrincipals")


class Operation(Settings):
    services: list[str] = Field(default_factory=list)  # RPC service: Bolt service, Dubbo interface, gRPC pkg.Service
    not_services: list[str] = Field(default_factory=list, alias="notServices")
    methods: list[str] = Field(default_factory=list)  # RPC method, or the HTTP method for plain HTTP
    not_methods: list[str] = Field(default_factory=list, alias="notMethods")
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list, alias="notHosts")
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list, alias="notPaths")


class From(Settings):
    source: Source = Field(default_factory=Source)


class To(Settings):
    operation: Operation = Field(default_factory=Operation)


class Condition(Settings):
    key: str
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list, alias="notValues")


class Rule(Settings):
    from_: list[From] = Field(default_factory=list, alias="from")
    to: list[To] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class Policy(Settings):
    name: str = ""
    action: Literal["ALLOW", "DENY"] = "ALLOW"
    rules: list[Rule] = Field(default_factory=list)
    dry_run: bool = False


class RbacSettings(Settings):
    policies: list[Policy] = Field(default_factory=list)
    dry_run: bool = False  # every policy in dry-run: count and log, never deny


# -- compiling ---------------------------------------------------------------------------------------

def _principal(s: Stream) -> str:
    return source_principal(s.context)


def _namespace(s: Stream) -> str:
    return namespace_of(source_principal(s.context))


def _ip(s: Stream) -> str:
    peer = s.context.peer  # source_ip, inlined
    return str(peer[0]) if peer else ""


def _request_principal(s: Stream) -> str:
    return s.context.request_principal or ""


def _service(s: Stream) -> str:
    return s.head.service or s.head.key("service") or ""  # the field first: no key() dispatch


def _method(s: Stream) -> str:
    return s.head.method or s.head.key("method") or ""  # a Bolt method may live in the body: key() resolves it


def _host(s: Stream) -> list[str]:
    h = s.head.key("host") or ""  # HTTP/1 Host header; HTTP/2 resolves it to :authority
    return [h, h.rsplit(":", 1)[0]] if ":" in h else [h]


def _path(s: Stream) -> list[str]:
    """HTTP: the path without its query. RPC (Bolt, Dubbo, a plugin's: no path): the service and
    ``/service/method``. gRPC: its path ``/pkg.Service/Method`` and the service ``pkg.Service``."""
    h = s.head
    p = h.path
    if p:
        p = p.split("?", 1)[0]
        svc = h.service
        if svc and p.startswith("/") and p[1:1 + len(svc)] == svc and p[1 + len(svc):2 + len(svc)] == "/":
            return [p, svc]
        return [p]
    svc = _service(s)
    return [svc, f"/{svc}/{_method(s)}"] if svc else []


def _claim(path: list[str]) -> MultiGetter:
    def get(s: Stream) -> list[str]:
        v: Any = s.context.attrs.get(CLAIMS_ATTR)
        for p in path:
            if not isinstance(v, dict):
                return []
            v = v.get(p)
        if v is None:
            return []
        if isinstance(v, list):
            return [str(x) for x in v]
        if isinstance(v, str):
            return [v]
        return [str(v).lower() if isinstance(v, bool) else str(v)]

    return get


def _header(name: str) -> Getter:
    def get(s: Stream) -> str:
        return s.head.key(name) or ""  # "" matches no value, as an absent header

    return get


_FIXED_KEYS: dict[str, Getter | MultiGetter] = {
    "source.principal": _principal,
    "source.namespace": _namespace,
    "source.ip": _ip,
    "remote.ip": _ip,
    "request.auth.principal": _request_principal,
    "request.service": _service,
    "request.method": _method,
    "request.path": _path,
    "request.host": _host,
}
_BRACKETS = re.compile(r"\[([^\]]+)\]")


def _getter(key: str, path: str) -> tuple[Getter | MultiGetter, bool]:
    """The getter for a ``when`` key, and whether it returns a list."""
    from sofamesh.core.errors import ConfigError

    if key in _FIXED_KEYS:
        return _FIXED_KEYS[key], key in ("request.host", "request.path")
    if key.startswith("request.headers[") and key.endswith("]"):
        return _header(key[len("request.headers["):-1].lower()), False
    if key.startswith("request.auth.claims["):
        parts = _BRACKETS.findall(key[len("request.auth.claims"):])
        if parts:
            return _claim(parts), True
    if key == "request.auth.audiences":
        return _claim(["aud"]), True
    if key == "request.auth.presenter":
        return _claim(["azp"]), True
    known = ", ".join([*_FIXED_KEYS, "request.headers[NAME]", "request.auth.claims[NAME]", "request.auth.audiences"])
    raise ConfigError(path, f"unknown condition key {key!r} (known: {known})")


def _field(get: Getter | MultiGetter, yes: list[str], no: list[str], ip: bool = False,
           multi: bool = False) -> list[Pred]:
    """Predicates for one field: some value matches ``yes``, no value matches ``no``. ``multi``: ``get``
    returns a list (host, claims); otherwise one string, so a request allocates no list."""
    out: list[Pred] = []
    make = matchers.ip_blocks if ip else matchers.values
    if multi:
        many: Any = get
        if yes:
            m = make(yes)
            out.append(lambda s: any(m(v) for v in many(s)))
        if no:
            n = make(no)
            out.append(lambda s: not any(n(v) for v in many(s)))
        return out
    one: Any = get
    if yes:
        m1 = make(yes)
        out.append(lambda s: m1(one(s)))
    if no:
        n1 = make(no)
        out.append(lambda s: not n1(one(s)))
    return out


def _all(preds: list[Pred]) -> Pred:
    if not preds:
        return lambda s: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda s: a(s) and b(s)
    if len(preds) == 3:
        a, b, c = preds
        return lambda s: a(s) and b(s) and c(s)
    t = tuple(preds)

    def every(s: Stream) -> bool:
        for p in t:
            if not p(s):
                return False
        return True

    return every


def _any(preds: list[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    t = tuple(preds)

    def one(s: Stream) -> bool:
        for p in t:
            if p(s):
                return True
        return False

    return one


def _source(src: Source) -> list[Pred]:
    """The predicates a ``source`` entry needs, all of which must hold."""
    return [
        *_field(_principal, src.principals, src.not_principals),
        *_field(_namespace, src.namespaces, src.not_namespaces),
        *_field(_ip, src.ip_blocks, src.not_ip_blocks, ip=True),
        *_field(_request_principal, src.request_principals, src.not_request_principals),
    ]


def _operation(op: Operation) -> list[Pred]:
    return [
        *_field(_service, op.services, op.not_services),
        *_field(_method, op.methods, op.not_methods),
        *_field(_host, op.hosts, op.not_hosts, multi=True),
        *_field(_path, op.paths, op.not_paths, multi=True),
    ]


def _alternatives(entries: list[list[Pred]]) -> list[Pred]:
    """Predicates for "one of ``entries`` holds"; a single entry adds its own to the rule's, flat."""
    if len(entries) == 1:
        return entries[0]
    return [_any([_all(e) for e in entries])]


def _rule(rule: Rule, path: str) -> Pred:
    parts: list[Pred] = []
    if rule.from_:
        parts.extend(_alternatives([_source(f.source) for f in rule.from_]))
    if rule.to:
        parts.extend(_alternatives([_operation(t.operation) for t in rule.to]))
    for j, c in enumerate(rule.when):
        get, multi = _getter(c.key, f"{path}.when[{j}].key")
        parts.extend(_field(get, c.values, c.not_values, ip=c.key in ("source.ip", "remote.ip"), multi=multi))
    return _all(parts)


class CompiledPolicy:
    __slots__ = ("action", "dry_run", "matches", "name")

    def __init__(self, p: Policy, index: int, path: str, dry_run: bool) -> None:
        self.name = p.name or f"policy{index}"
        self.action = p.action
        self.dry_run = dry_run or p.dry_run
        rules = [_rule(r, f"{path}.rules[{k}]") for k, r in enumerate(p.rules)]
        # Istio: a policy without rules never matches (an ALLOW without rules so allows nothing).
        self.matches: Pred = _any(rules) if rules else (lambda s: False)


class RbacFilter(Filter):
    name = "authz.rbac"

    def __init__(self, settings: RbacSettings, path: str) -> None:
        pp = f"{path}.config.policies"
        compiled = [CompiledPolicy(p, i, f"{pp}[{i}]", settings.dry_run) for i, p in enumerate(settings.policies)]
        self.deny = tuple(p for p in compiled if p.action == "DENY")
        self.allow = tuple(p for p in compiled if p.action == "ALLOW")
        self.allow_enforced = any(not p.dry_run for p in self.allow)
        self.allowed = 0
        self.denied = 0
        self.shadow_denied = 0
        self._shadow_logged_at = 0.0
        self._shadow_unlogged = 0

    def on_request_head(self, stream: Stream) -> FilterResult:
        for p in self.deny:
            if p.matches(stream):
                if p.dry_run:
                    self._shadow(stream, p.name)
                    continue
                self.denied += 1
                return LocalReply(ReplyStatus.DENIED, f"RBAC: access denied by policy {p.name}")
        if self.allow:
            shadow_allow = False
            for p in self.allow:
                if p.matches(stream):
                    if not p.dry_run:
                        self.allowed += 1
                        return Verdict.CONTINUE
                    shadow_allow = True
            if self.allow_enforced:
                self.denied += 1
                return LocalReply(ReplyStatus.DENIED, "RBAC: access denied (no ALLOW policy matched)")
            if not shadow_allow:
                self._shadow(stream, "(no ALLOW policy matched)")
        self.allowed += 1
        return Verdict.CONTINUE

    def _shadow(self, stream: Stream, policy: str) -> None:
        self.shadow_denied += 1
        now = time.monotonic()
        if now - self._shadow_logged_at < 1.0:
            self._shadow_unlogged += 1
            return
        self._shadow_logged_at = now
        skipped, self._shadow_unlogged = self._shadow_unlogged, 0
        h = stream.head
        log.info("rbac dry-run: would deny %s %s/%s from %s (policy %s)%s", h.protocol, h.service, h.method,
                 stream.context.peer_identity or source_ip(stream.context), policy,
                 f"; {skipped} more since the last line" if skipped else "")

    def stats(self) -> dict[str, int]:
        return {"rbac_allowed": self.allowed, "rbac_denied": self.denied, "rbac_shadow_denied": self.shadow_denied}


class RbacFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return RbacFilter(parse(RbacSettings, config, path), path)


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("authz.rbac", RbacFilterFactory())


__all__ = ["RbacFilter", "RbacFilterFactory", "RbacSettings"]
