"""Who a stream comes from, in Istio's terms: the source principal (SPIFFE id without ``spiffe://``),
its namespace, the source IP, and the request principal (``<iss>/<sub>`` of a validated JWT)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sofamesh.core.proxy.stream import StreamContext

CLAIMS_ATTR = "jwt.claims"
"""``StreamContext.attrs`` key under which ``authn.jwt`` puts the validated token's claims."""


def source_principal(ctx: StreamContext) -> str:
    """``cluster.local/ns/default/sa/web`` for ``spiffe://cluster.local/ns/default/sa/web``; ``""`` if none."""
    return principal_of(ctx.peer_identity)


def principal_of(pid: str | None) -> str:
    """A peer identity (SPIFFE URI) as a principal, without ``spiffe://``; ``""`` for none."""
    if not pid:
        return ""
    return pid[9:] if pid.startswith("spiffe://") else pid


def namespace_of(principal: str) -> str:
    """The ``ns`` segment of a principal (``<td>/ns/<ns>/sa/<sa>``); ``""`` when it has none."""
    parts = principal.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == "ns":
            return parts[i + 1]
    return ""


def source_ip(ctx: StreamContext) -> str:
    return str(ctx.peer[0]) if ctx.peer else ""


__all__ = ["CLAIMS_ATTR", "namespace_of", "principal_of", "source_ip", "source_principal"]
