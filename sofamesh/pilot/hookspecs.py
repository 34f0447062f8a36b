"""Pilot hookspecs. Each docstring is the hook's contract; docs/plugins.md ("Pilot hooks") documents each one.

Hooks run at start-up, at shutdown and when the mesh model changes; none runs per xDS request or
per API call: they build the registries and generators that do the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.model import Service, ServiceInstance
    from sofamesh.pilot.policy.store import ConfigStoreFactory
    from sofamesh.pilot.registry import RegistryFactory
    from sofamesh.pilot.security.ca import CaFactory
    from sofamesh.pilot.view import PilotView
    from sofamesh.pilot.xds.generator import XdsGenerator
    from sofamesh.pilot.xds.transport import XdsTransportFactory

hookspec = pluggy.HookspecMarker("sofamesh")


@hookspec
def pilot_register_registries(catalog: Catalog[RegistryFactory]) -> None:
    """Register registry adapter factories (``embedded``, ``zookeeper``, ``etcd``, ...).

    Runs once when Pilot builds its catalogs, before its config is validated.

    :param catalog: the registry catalog; call ``catalog.add(name, factory)`` where ``name`` is the
        ``type`` a Pilot config's ``registries[*]`` entry uses and ``factory`` is a
        :class:`~sofamesh.pilot.registry.RegistryFactory` (``factory.create(context)`` returns a
        :class:`~sofamesh.pilot.registry.Registry`).
    :return: nothing; a name already taken raises :class:`~sofamesh.core.errors.PluginError`.

    .. versionadded:: 0.1
    """


@hookspec
def pilot_register_config_stores(catalog: Catalog[ConfigStoreFactory]) -> None:
    """Register config store factories (``embedded``, ``files``, ``etcd``, ...).

    Runs once when Pilot builds its catalogs, before its config is validated. Pilot uses the one
    store its config's ``config_store.type`` names (``embedded`` by default) for its policy
    resources (VirtualService, DestinationRule, ..., MetaRouter).

    :param catalog: the config store catalog; call ``catalog.add(name, factory)`` where ``name`` is
        the ``type`` of a Pilot config's ``config_store`` section and ``factory`` is a
        :class:`~sofamesh.pilot.policy.store.ConfigStoreFactory` (``factory.create(context)``
        gets a :class:`~sofamesh.pilot.policy.store.ConfigStoreContext` and returns a
        :class:`~sofamesh.pilot.policy.store.ConfigStore`).
    :return: nothing; a name already taken raises :class:`~sofamesh.core.errors.PluginError`.

    .. versionadded:: 0.1
    """


@hookspec
def pilot_register_cas(catalog: Catalog[CaFactory]) -> None:
    """Register certificate authority factories (``builtin``, or an external CA's adapter).

    Runs once when Pilot builds its catalogs. Pilot uses the one CA its config's ``ca.type``
    names (``builtin`` by default) to sign the workload certificates its CSR API hands out; Pilot
    authenticates the caller and checks the identity before the CA is asked.

    :param catalog: the CA catalog; ``catalog.add(name, factory)`` where ``name`` is the
        ``ca.type`` of the Pilot config and ``factory`` is a
        :class:`~sofamesh.pilot.security.ca.CaFactory`: ``factory.create(context)`` gets a
        :class:`~sofamesh.pilot.security.ca.CaContext` (``name``, ``trust_domain``, ``storage``,
        ``options``, ``data_dir``) and returns a
        :class:`~sofamesh.pilot.security.ca.CertificateAuthority`.
    :return: nothing; a name already taken raises :class:`~sofamesh.core.errors.PluginError`.

    .. versionadded:: 0.1
    """


@hookspec
def pilot_register_xds_generators(catalog: Catalog[XdsGenerator]) -> None:
    """Register xDS resource generators.

    Runs once when Pilot builds its catalogs. Every registered generator is used: for each xDS
    type URL a node asks for, Pilot merges the resources of every generator whose ``type_url``
    matches. A protocol plugin adds its own listeners or route config (typed extension config, or
    a type URL of its own) this way, without a change to Pilot.

    :param catalog: the generator catalog; ``catalog.add(name, generator)`` where ``generator`` is a
        :class:`~sofamesh.pilot.xds.generator.XdsGenerator`. Third-party names carry a vendor
        prefix (``acme.bolt-routes``).
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def pilot_register_xds_transports(catalog: Catalog[XdsTransportFactory]) -> None:
    """Register xDS transports: what carries ADS streams (``grpcio``, ``native``).

    Runs once when Pilot builds its catalogs. Pilot uses the one its config's ``xds.transport``
    names (``grpcio`` by default); every transport drives the same ADS server
    (:class:`~sofamesh.pilot.xds.transport.XdsTransport`).

    :param catalog: the transport catalog; ``catalog.add(name, factory)`` where ``factory.create()``
        returns a :class:`~sofamesh.pilot.xds.transport.XdsTransport`.
    :return: nothing; a name already taken raises :class:`~sofamesh.core.errors.PluginError`.

    .. versionadded:: 0.1
    """


@hookspec
def pilot_startup(pilot: PilotView) -> Any:
    """Pilot is serving.

    Runs once after the registries started and the xDS and API ports are bound.

    :param pilot: the running :class:`~sofamesh.pilot.view.PilotView` (its ``model``, ``registries``,
        ``xds`` server, ``config``, its ``policy`` model and ``config_store``).
    :return: ``None`` or an awaitable, which Pilot awaits before it reports ready.

    .. versionadded:: 0.1
    """


@hookspec
def pilot_shutdown(pilot: PilotView) -> Any:
    """Pilot is stopping.

    Runs once after the xDS and API servers stopped accepting, before the registries stop.

    :param pilot: the stopping :class:`~sofamesh.pilot.view.PilotView`.
    :return: ``None`` or an awaitable, which Pilot awaits (bounded by its grace period).

    .. versionadded:: 0.1
    """


@hookspec
def pilot_instances_changed(service: Service, instances: Sequence[ServiceInstance]) -> None:
    """The instances of one service changed in the mesh model.

    Runs once per changed service each time the model applies a registry change (a batch of
    registrations from one registry is one change), before xDS pushes are scheduled, with an
    empty ``instances`` for a service that disappeared. Used by sync modules and auditors;
    it must not block. A service that disappeared is reported with its last known Service.

    :param service: the :class:`~sofamesh.pilot.model.Service` as the model now knows it.
    :param instances: every :class:`~sofamesh.pilot.model.ServiceInstance` of that service now,
        from every registry (``instance.origin`` names the registry).
    :return: nothing.

    .. versionadded:: 0.1
    """
