"""Entry point ``http2``: registers the HTTP/2 (gRPC, Triple) codec factory in the protocol catalog.

The codec on the project's own HTTP/2 machine (``native_codec``) is the default;
``SOFAMESH_HTTP2_CODEC=h2`` in the environment registers the one on the ``h2`` library instead
(the fallback while the own engine is new).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.protocols.http2.codec import Http2CodecFactory
from sofamesh.plugins.protocols.http2.native_codec import NativeHttp2CodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory

ENGINE_VARIABLE = "SOFAMESH_HTTP2_CODEC"


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    engine = os.environ.get(ENGINE_VARIABLE, "native")
    if engine not in ("h2", "native"):
        raise ValueError(f"{ENGINE_VARIABLE}={engine!r}: expected 'h2' or 'native'")
    factory = NativeHttp2CodecFactory() if engine == "native" else Http2CodecFactory()
    catalog.add(Http2CodecFactory.name, factory)
