"""Entry point of the ``dubbo`` protocol plugin: registers the codec factory in the protocol catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.protocols.dubbo.codec import DubboCodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    catalog.add("dubbo", DubboCodecFactory())
