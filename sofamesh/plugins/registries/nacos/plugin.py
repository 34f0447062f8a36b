"""Entry point of the ``nacos`` registry plugin (group ``sofamesh.pilot.plugins``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.registry import check_options
from sofamesh.plugins.registries.nacos.adapter import NacosClusterRegistry
from sofamesh.plugins.registries.nacos.api import NacosRegistry
from sofamesh.plugins.registries.nacos.grpc_api import default_address

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.registry import Registry, RegistryContext, RegistryFactory

_OPTIONS = ("address", "grpc_address", "grpc_keepalive_s", "grpc_idle_s", "heartbeat_timeout_s",
            "ip_delete_timeout_s", "beat_interval_s", "reap_interval_s", "shared")
_CLUSTER_OPTIONS = ("endpoint", "namespace", "group", "poll_interval_s", "beat_interval_s")


class NacosRegistryFactory:
    """Options: ``address`` (``127.0.0.1:8848``, the port Nacos clients assume; ``null``: only
    ``/nacos/v1/ns`` on Pilot's API port), ``grpc_address`` (Nacos 2's gRPC protocol: by default the
    ``address`` port + 1000, 9848, where Nacos 2 clients look; ``null``: not served),
    ``grpc_keepalive_s`` (20: gRPC keepalive pings that find a silent client), ``grpc_idle_s`` (20: a
    connection silent that long is sent a ``ClientDetectionRequest``, and closed unanswered),
    ``heartbeat_timeout_s`` (15), ``ip_delete_timeout_s``
    (30), ``beat_interval_s`` (5, what beats answer as ``clientBeatInterval``), ``reap_interval_s``.
    ``shared`` (``{type: etcd, endpoint, prefix}``: the registrations in etcd, for Pilot replicas)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _OPTIONS)
        address = opts.get("address", "127.0.0.1:8848")
        grpc_address = opts["grpc_address"] if "grpc_address" in opts else default_address(address)
        registry = NacosRegistry(
            context.name,
            context.model,
            address=address,
            grpc_address=None if grpc_address is None else str(grpc_address),
            grpc_keepalive_s=float(opts.get("grpc_keepalive_s", 20.0)),
            grpc_required="grpc_address" in opts,
            grpc_idle_s=float(opts.get("grpc_idle_s", 20.0)),
            heartbeat_timeout_s=float(opts.get("heartbeat_timeout_s", 15.0)),
            ip_delete_timeout_s=float(opts.get("ip_delete_timeout_s", 30.0)),
            beat_interval_s=float(opts.get("beat_interval_s", 5.0)),
            reap_interval=float(opts.get("reap_interval_s", 0.25)),
        )
        registry.share(opts.get("shared"))
        return registry


class NacosClusterRegistryFactory:
    """An existing Nacos server (``adapter.py``). Options: ``endpoint`` (``http://127.0.0.1:8848``;
    ``/nacos`` is added when missing), ``namespace`` (``public``) and ``group`` (``DEFAULT_GROUP``):
    the one namespace and group read and written, ``poll_interval_s`` (10: Nacos's ``cacheMillis``),
    ``beat_interval_s`` (5: for what Pilot registers there)."""

    def create(self, context: RegistryContext) -> Registry:
        opts = check_options(context, _CLUSTER_OPTIONS)
        return NacosClusterRegistry(
            context.name,
            str(opts.get("endpoint", "http://127.0.0.1:8848")),
            namespace=str(opts.get("namespace", "public")),
            group=str(opts.get("group", "DEFAULT_GROUP")),
            poll_interval_s=float(opts.get("poll_interval_s", 10)),
            beat_interval_s=float(opts.get("beat_interval_s", 5)),
        )


@hookimpl
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    catalog.add("nacos", NacosRegistryFactory())
    catalog.add("nacos-cluster", NacosClusterRegistryFactory())
