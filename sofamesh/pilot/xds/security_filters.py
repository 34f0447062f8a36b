"""The HTTP filters that enforce a workload's security policy on an HTTP connection manager, for
either kind of proxy: a sofamesh proxy gets its kernel filters (``authn.mtls``, ``authn.jwt``,
``authz.rbac``, ...) as ``sofamesh.config.filter.v1.Filter`` typed structs, an Envoy gets its own
JWT filter (:mod:`.envoy_jwt`) and RBAC filter (:mod:`.envoy_rbac`) built from the same configs.
Shared by a sidecar's inbound listeners and a gateway's listeners. Pure: configs in, protobuf out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, struct_pb2
from xds.type.v3 import typed_struct_pb2

from sofamesh.core.xds.route_filters import FILTER_TYPE_URL
from sofamesh.pilot.xds.envoy_jwt import JwksFor, envoy_jwt_filters, issuers
from sofamesh.pilot.xds.envoy_rbac import envoy_rbac_filters


def kernel_filter_config(f: Mapping[str, Any]) -> any_pb2.Any:
    """One kernel filter ``{type, config}`` as the typed struct a sofamesh proxy reads."""
    value = struct_pb2.Struct()
    value.update(dict(f))
    a = any_pb2.Any()
    a.Pack(typed_struct_pb2.TypedStruct(type_url=FILTER_TYPE_URL, value=value))
    return a


def kernel_http_filters(filters: Iterable[Mapping[str, Any]]) -> list[hcm_pb2.HttpFilter]:
    """Kernel filters as HTTP filters named ``sofamesh.TYPE``."""
    return [hcm_pb2.HttpFilter(name=f"sofamesh.{f['type']}", typed_config=kernel_filter_config(f)) for f in filters]


def security_http_filters(
    sofamesh: bool,
    kernel: Iterable[Mapping[str, Any]],
    jwt: Mapping[str, Any] | None,
    rbac: Mapping[str, Any] | None,
    jwks_for: JwksFor | None,
) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filters enforcing ``jwt`` (RequestAuthentication) and ``rbac`` (AuthorizationPolicy),
    router excluded: ``kernel`` (the kernel filters built from them) for a sofamesh proxy, else
    Envoy's JWT filter then its RBAC filter (whose request principals name the issuers sent)."""
    if sofamesh:
        return kernel_http_filters(kernel)
    jwt_filters = envoy_jwt_filters(jwt, jwks_for)
    return [*jwt_filters, *envoy_rbac_filters(rbac, issuers(jwt, jwks_for) if jwt_filters else None)]


__all__ = ["FILTER_TYPE_URL", "kernel_filter_config", "kernel_http_filters", "security_http_filters"]
