"""Entry point of the ``dubbo`` protocol plugin: registers the codec factory in the protocol catalog
and, in Pilot (the same module is a ``sofamesh.pilot.plugins`` entry point), the xDS generators for
Dubbo services: clusters, endpoints and the sidecar's egress listener on port 20880 (docs/xds.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.protocols.dubbo.codec import DubboCodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory
    from sofamesh.pilot.xds.generator import XdsGenerator


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    catalog.add("dubbo", DubboCodecFactory())


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    from sofamesh.pilot.xds.rpc import rpc_generators  # Pilot only: keeps protobufs out of the data plane

    for name, generator in rpc_generators("dubbo", 20880, always_listen=True).items():
        catalog.add(name, generator)
