"""A route's ``hash_policy`` (Envoy's): what of a request a hash-based balancer (``ring_hash``,
``maglev``) hashes. Computed only for a cluster whose balancer ``needs_hash``.

Each policy hashes one thing with xxHash64, as Envoy does: a header (for RPC a header-map key or an
attachment, through ``RequestHead.key``; HTTP headers match in any case, RPC keys exactly as named),
a cookie, the caller's IP, a query parameter, or an RPC argument's encoded bytes
(``Codec.request_argument``; Dubbo's ConsistentHashLoadBalance hashes the first). Hashes combine as
Envoy's do (the running hash rotated left by one, xor the next); a ``terminal`` policy that produced
a hash ends the list. Nothing found: no hash (the balancer picks at random). A cookie policy never
sets a cookie (Envoy's ``ttl`` cookie generation is not done). xxhash is imported by the first
route that has a policy: a sidecar without one does not load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from sofamesh.core.codec import Codec
    from sofamesh.core.config.model import HashPolicyConfig
    from sofamesh.core.events import RequestHead

_MASK: Final = (1 << 64) - 1
_HEADER, _COOKIE, _SOURCE_IP, _QUERY, _ARGUMENT = range(5)


class HashPolicy:
    """A route's compiled ``hash_policy``: immutable, shared by the route's requests."""

    __slots__ = ("_digest", "_steps")

    def __init__(self, configs: list[HashPolicyConfig]) -> None:
        import xxhash

        self._digest: Callable[[bytes], int] = xxhash.xxh64_intdigest
        steps: list[tuple[int, Any, bool]] = []
        for c in configs:
            if c.header is not None:
                steps.append((_HEADER, c.header.header_name, c.terminal))
            elif c.cookie is not None:
                steps.append((_COOKIE, c.cookie.name, c.terminal))
            elif c.connection_properties is not None:
                if c.connection_properties.source_ip:
                    steps.append((_SOURCE_IP, None, c.terminal))
            elif c.query_parameter is not None:
                steps.append((_QUERY, c.query_parameter.name, c.terminal))
            elif c.argument is not None:
                steps.append((_ARGUMENT, c.argument.index, c.terminal))
        self._steps = tuple(steps)

    def hash(self, head: RequestHead, peer: tuple[Any, ...], codec: Codec) -> int | None:
        """The request's hash, or None when no policy found anything to hash."""
        out: int | None = None
        digest = self._digest
        for kind, arg, terminal in self._steps:
            data: bytes | None = None
            if kind == _HEADER:
                v = head.headers.get(arg)
                if v is None and head.resolve is not None:
                    v = head.resolve(arg)
                data = v.encode() if v is not None else None
            elif kind == _ARGUMENT:
                data = codec.request_argument(head, arg)
            elif kind == _SOURCE_IP:
                data = str(peer[0]).encode() if peer else None
            elif kind == _COOKIE:
                v = _cookie(head.headers.get_all("cookie"), arg)
                data = v.encode() if v is not None else None
            elif kind == _QUERY:
                v = _query(head.path, arg)
                data = v.encode() if v is not None else None
            if data is None:
                continue
            h = digest(data)
            out = h if out is None else (((out << 1) | (out >> 63)) & _MASK) ^ h
            if terminal:
                break
        return out


def _cookie(values: list[str], name: str) -> str | None:
    for line in values:
        for part in line.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v
    return None


def _query(path: str, name: str) -> str | None:
    _, sep, query = path.partition("?")
    if not sep:
        return None
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == name:
            return v
    return None


__all__ = ["HashPolicy"]
