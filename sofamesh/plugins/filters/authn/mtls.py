"""``authn.mtls``: peer authentication like Istio's PeerAuthentication.

``STRICT``: a request must come over mutual TLS with a verified peer certificate naming a SPIFFE
identity (the listener needs ``tls.ca``); otherwise it gets the protocol's "unauthenticated" reply.
``PERMISSIVE``: plaintext and mTLS are both accepted; the identity is used when present.
``trust_domains`` (optional) limits which SPIFFE trust domains are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sofamesh.core.codec import ReplyStatus
from sofamesh.core.plugin_host import hookimpl
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory, FilterResult, LocalReply, Verdict
from sofamesh.plugins.filters.settings import Settings, parse

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.stream import Stream


class MtlsSettings(Settings):
    mode: Literal["STRICT", "PERMISSIVE"] = "STRICT"
    trust_domains: list[str] = Field(default_factory=list)


class MtlsFilter(Filter):
    name = "authn.mtls"

    def __init__(self, settings: MtlsSettings) -> None:
        self.strict = settings.mode == "STRICT"
        self.domains = tuple(f"spiffe://{d}/" for d in settings.trust_domains)
        self.mtls = 0
        self.plaintext = 0
        self.rejected = 0

    def on_request_head(self, stream: Stream) -> FilterResult:
        pid = stream.context.peer_identity
        if pid is None:
            self.plaintext += 1
            if self.strict:
                self.rejected += 1
                return LocalReply(ReplyStatus.UNAUTHENTICATED, "mTLS required: no verified peer certificate")
            return Verdict.CONTINUE
        if self.domains and not pid.startswith(self.domains):
            self.rejected += 1
            return LocalReply(ReplyStatus.UNAUTHENTICATED, f"peer identity {pid} is not in an accepted trust domain")
        self.mtls += 1
        return Verdict.CONTINUE

    def stats(self) -> dict[str, int]:
        return {"mtls_authenticated": self.mtls, "mtls_plaintext": self.plaintext, "mtls_rejected": self.rejected}


class MtlsFilterFactory(FilterFactory):
    def create(self, config: Mapping[str, Any], path: str) -> Filter:
        return MtlsFilter(parse(MtlsSettings, config, path))


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("authn.mtls", MtlsFilterFactory())


__all__ = ["MtlsFilter", "MtlsFilterFactory", "MtlsSettings"]
