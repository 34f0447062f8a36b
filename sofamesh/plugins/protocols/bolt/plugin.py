"""Entry point of the ``bolt`` protocol plugin: registers the codec factory in the protocol catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.protocols.bolt.codec import BoltCodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    catalog.add("bolt", BoltCodecFactory())
