"""Entry point of the built-in CA (group ``sofamesh.pilot.plugins``, catalog name ``builtin``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.plugins.ca.builtin.authority import BuiltinCa

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.security.ca import CaContext, CaFactory


class BuiltinCaFactory:
    """Options: ``cacerts`` (a directory in Istio's layout; default: a root of Pilot's own),
    ``root_ttl_days`` (3650, for the root Pilot creates)."""

    def create(self, context: CaContext) -> BuiltinCa:
        return BuiltinCa(context)


@hookimpl
def pilot_register_cas(catalog: Catalog[CaFactory]) -> None:
    catalog.add("builtin", BuiltinCaFactory())
