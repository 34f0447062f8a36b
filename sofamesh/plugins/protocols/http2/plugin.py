"""Entry point ``http2``: registers the HTTP/2 (gRPC, Triple) codec factory in the protocol catalog.

The codec runs on the project's own HTTP/2 engine (``machine``). The codec on the ``h2`` library,
once selected with ``SOFAMESH_HTTP2_CODEC=h2``, was removed: an environment that still names it
fails at start-up with a message saying so, rather than silently running another engine.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sofamesh.core.errors import PluginError
from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.protocols.http2.codec import Http2CodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory

ENGINE_VARIABLE = "SOFAMESH_HTTP2_CODEC"


def check_engine(value: str | None) -> None:
    """Refuse an environment that still selects the removed ``h2`` engine (or names an unknown one)."""
    if value is None or value == "native":
        return
    if value == "h2":
        raise PluginError(
            f"{ENGINE_VARIABLE}=h2: the HTTP/2 codec on the h2 library was removed; the project's own "
            f"engine is the only one (unset {ENGINE_VARIABLE})"
        )
    raise PluginError(f"{ENGINE_VARIABLE}={value!r}: unknown HTTP/2 engine (the only one is 'native'; unset it)")


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    check_engine(os.environ.get(ENGINE_VARIABLE))
    catalog.add(Http2CodecFactory.name, Http2CodecFactory())
