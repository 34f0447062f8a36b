"""Kernel filters carried in xDS as ``xds.type.v3.TypedStruct`` of type
``type.googleapis.com/sofamesh.config.filter.v1.Filter`` (value ``{"type": NAME, "config": {...}}``):
an HTTP filter of an HCM, an entry of ``rpc_proxy``'s ``filters``, or a route's own filter.

A route's own (the ``transcoder`` and ``grpc_json_transcoder`` route filters, from Pilot) sits in the
Envoy route's ``typed_per_filter_config`` under ``sofamesh.filters.http.NAME``, wrapped in an
``envoy.config.route.v3.FilterConfig`` with ``is_optional`` so that an Envoy, which has no such
filter, ignores it. Pure: messages in, mappings out; the filter validates its own config when the
route is built, and a bad one is NACKed naming its YAML path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sofamesh.core.errors import ConfigError
from sofamesh.core.xds.unpack import struct_value, try_unpack, unpack

__all__ = [
    "FILTER_CONFIG_TYPE",
    "FILTER_TYPE_URL",
    "TYPED_STRUCT_TYPES",
    "kernel_filter",
    "route_filter",
    "route_filter_key",
]

_T: Final = "type.googleapis.com/"
FILTER_TYPE_URL: Final = _T + "sofamesh.config.filter.v1.Filter"
FILTER_CONFIG_TYPE: Final = _T + "envoy.config.route.v3.FilterConfig"
TYPED_STRUCT_TYPES: Final = (_T + "xds.type.v3.TypedStruct", _T + "udpa.type.v1.TypedStruct")


def route_filter_key(name: str) -> str:
    """The ``typed_per_filter_config`` key of route filter ``name``."""
    return f"sofamesh.filters.http.{name}"


def _ints(v: Any) -> Any:
    """Struct numbers arrive as floats: whole ones become ints again."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [_ints(x) for x in v]
    if isinstance(v, dict):
        return {k: _ints(x) for k, x in v.items()}
    return v


def kernel_filter(value: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``{type, config}`` of a ``sofamesh.config.filter.v1.Filter`` -> a kernel filter entry."""
    unknown = set(value) - {"type", "config"}
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}", "unknown key")
    if not isinstance(value.get("type"), str) or not value["type"]:
        raise ConfigError(f"{path}.type", "required: a filter catalog name (authz.rbac, authn.mtls, ...)")
    return {"type": value["type"], "config": _ints(value.get("config") or {})}


def route_filter(cfg: Any, path: str) -> dict[str, Any] | None:
    """The route ``filters`` entry ``cfg`` (a packed ``Any`` of ``typed_per_filter_config``) carries;
    None when it carries none (disabled, or an optional config of another kind: Envoy's
    ``is_optional``). Raises ``ConfigError`` for a config this sidecar cannot read."""
    from xds.type.v3 import typed_struct_pb2

    optional = False
    if cfg.type_url == FILTER_CONFIG_TYPE:
        from envoy.config.route.v3 import route_components_pb2

        wrapper = unpack(cfg, route_components_pb2.FilterConfig(), path)
        if wrapper.disabled:
            return None
        optional, cfg, path = wrapper.is_optional, wrapper.config, f"{path}.config"
    ts = typed_struct_pb2.TypedStruct()
    if cfg.type_url not in TYPED_STRUCT_TYPES or not try_unpack(cfg, ts, path) or ts.type_url != FILTER_TYPE_URL:
        if optional:
            return None
        raise ConfigError(f"{path}.type_url", f"a route's own filter must be a TypedStruct of {FILTER_TYPE_URL}")
    return kernel_filter(struct_value(ts.value, f"{path}.value"), f"{path}.value")
