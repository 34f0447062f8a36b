"""Registers the ``thrift`` protocol with sofamesh (entry point ``thrift`` in group ``sofamesh.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh_thrift.codec import ThriftCodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    catalog.add("thrift", ThriftCodecFactory())
