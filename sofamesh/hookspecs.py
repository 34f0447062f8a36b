"""Data-plane hookspecs. Each docstring is the hook's contract; docs/plugins.md documents each one.

Hooks run at start-up and on config change only. None runs per request: they build the objects
(codec factories, filters, load balancers) that serve traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.core.codec import CodecFactory
    from sofamesh.core.config.model import ProxyConfig
    from sofamesh.core.proxy.filter_chain import FilterFactory
    from sofamesh.core.server_view import ServerView
    from sofamesh.core.upstream.load_balancer import LoadBalancerFactory

hookspec = pluggy.HookspecMarker("sofamesh")


@hookspec
def sofamesh_register_protocols(catalog: Catalog[CodecFactory]) -> None:
    """Register protocol codec factories.

    Runs once per catalog build (start-up and every reload), before the config is validated.

    :param catalog: the protocol catalog; call ``catalog.add(name, factory)`` with a
        :class:`~sofamesh.core.codec.CodecFactory` whose ``name`` is the name YAML uses.
    :return: nothing; a name already taken raises :class:`~sofamesh.core.errors.PluginError`.

    .. versionadded:: 0.1
    """


@hookspec
def sofamesh_register_filters(catalog: Catalog[FilterFactory]) -> None:
    """Register filter factories (authn, authz, quota, telemetry, in-house filters).

    Runs once per catalog build, before the config is validated.

    :param catalog: the filter catalog; ``catalog.add("acme.audit", factory)`` where ``factory``
        is a :class:`~sofamesh.core.proxy.filter_chain.FilterFactory`. Third-party names carry a
        vendor prefix.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def sofamesh_register_load_balancers(catalog: Catalog[LoadBalancerFactory]) -> None:
    """Register load-balancer factories (``round_robin``, ``random``, ...).

    Runs once per catalog build, before the config is validated.

    :param catalog: the load-balancer catalog; ``catalog.add(name, factory)`` where ``factory``
        is a :class:`~sofamesh.core.upstream.load_balancer.LoadBalancerFactory`.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def sofamesh_configure(config: ProxyConfig) -> None:
    """Inspect the validated config before the server is built from it.

    Runs after validation, at start-up and on every reload. Raise
    :class:`~sofamesh.core.errors.ConfigError` (with a YAML path) to refuse the config.

    :param config: the validated, immutable :class:`~sofamesh.core.config.model.ProxyConfig`.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def sofamesh_startup(server: ServerView) -> Any:
    """The server is listening.

    Runs once after every listener and the admin port are bound, before traffic is accepted.

    :param server: the running process, as a :class:`~sofamesh.core.server_view.ServerView`
        (its ``config``, ``listeners``, ``clusters``, ``apply``).
    :return: ``None`` or an awaitable, which the server awaits before it accepts traffic.

    .. versionadded:: 0.1
    """


@hookspec
def sofamesh_shutdown(server: ServerView) -> Any:
    """The server is stopping.

    Runs once after listeners stopped accepting and in-flight requests drained or were cut.

    :param server: the stopping process, as a :class:`~sofamesh.core.server_view.ServerView`.
    :return: ``None`` or an awaitable, which the server awaits (bounded by the grace period).

    .. versionadded:: 0.1
    """


@hookspec
def sofamesh_config_updated(snapshot: ProxyConfig) -> None:
    """A new config is serving (a reload or an xDS update was applied).

    Runs after the swap; in-flight requests finish on the old objects.

    :param snapshot: the :class:`~sofamesh.core.config.model.ProxyConfig` now serving.
    :return: nothing.

    .. versionadded:: 0.1
    """
