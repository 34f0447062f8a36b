"""Registers the ``acme.audit`` filter with sofamesh (entry point ``acme.audit``, group ``sofamesh.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from acme_audit.filter import AuditFilterFactory
from sofamesh.core.plugin_host import hookimpl

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.proxy.filter_chain import FilterFactory


@hookimpl
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    catalog.add("acme.audit", AuditFilterFactory())
