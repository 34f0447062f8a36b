"""Entry point ``http2``: registers the HTTP/2 (gRPC, Triple) codec factory in the protocol catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.protocols.http2.codec import Http2CodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    catalog.add(Http2CodecFactory.name, Http2CodecFactory())
