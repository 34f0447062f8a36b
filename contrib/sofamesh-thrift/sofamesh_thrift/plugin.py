"""Registers the ``thrift`` protocol with sofamesh (entry point ``thrift`` in group ``sofamesh.plugins``)
and its Pilot side (the same module under ``sofamesh.pilot.plugins``): xDS generators for Thrift
services, so Pilot serves Thrift routes to sidecars with no change to Pilot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sofamesh.core.plugin_host import hookimpl
from sofamesh_thrift.codec import ThriftCodecFactory

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory


@hookimpl
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    catalog.add("thrift", ThriftCodecFactory())


EGRESS_PORT = 9090  # the sidecar's Thrift egress listener on 127.0.0.1 (node metadata sofamesh.thrift_port)


@hookimpl
def pilot_register_xds_generators(catalog: Catalog[Any]) -> None:
    from sofamesh.pilot.xds.rpc import rpc_generators  # Pilot only: keeps protobufs out of the data plane

    for name, generator in rpc_generators("thrift", EGRESS_PORT).items():
        catalog.add(name, generator)
