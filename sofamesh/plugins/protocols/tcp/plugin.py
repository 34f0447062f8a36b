"""Registers ``tcp``: a passthrough factory. The kernel pipes bytes; there is no codec to drive.

It matches any first bytes, so on a listener with several protocols it is tried last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from sofamesh.core.codec import Codec, CodecFactory, CodecLimits, Role, Sniff
from sofamesh.core.errors import PluginError
from sofamesh.core.plugin_host import hookimpl

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog


class TcpFactory(CodecFactory):
    name: ClassVar[str] = "tcp"
    passthrough: ClassVar[bool] = True

    def sniff(self, prefix: bytes) -> Sniff:
        return Sniff.MATCH

    def new_codec(self, role: Role, limits: CodecLimits) -> Codec:
        raise PluginError("tcp is a passthrough protocol: it has no codec")


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    catalog.add("tcp", TcpFactory())
