"""PluginHost: one path to find plugins (stevedore over entry points), one path to call them (pluggy).

Entry-point names are catalog names. Loading is lazy: ``load(["http1"])`` imports only that module.
"""

from __future__ import annotations

import importlib.metadata
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy
from stevedore import NamedExtensionManager

from sofamesh.core.catalog import Catalog, Provenance
from sofamesh.core.errors import PluginError

PROJECT = "sofamesh"
DATA_PLANE_GROUP = "sofamesh.plugins"
PILOT_GROUP = "sofamesh.pilot.plugins"

hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """An installed plugin as entry-point metadata shows it (nothing imported)."""

    name: str
    target: str
    distribution: str
    version: str


def _scan(group: str) -> dict[str, PluginInfo]:
    found: dict[str, PluginInfo] = {}
    seen_dists: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "<unknown>"
        key = (dist_name.lower(), str(getattr(dist, "_path", "")))
        if key in seen_dists:
            continue
        seen_dists.add(key)
        for ep in dist.entry_points:
            if ep.group != group:
                continue
            info = PluginInfo(ep.name, ep.value, dist_name, dist.version)
            prev = found.get(ep.name)
            if prev is not None and prev.distribution.lower() != dist_name.lower():
                raise PluginError(
                    f"plugin name {ep.name!r} in group {group} is registered by two distributions: "
                    f"{prev.distribution} {prev.version} ({prev.target}) and {dist_name} {dist.version} "
                    f"({ep.value})"
                )
            found[ep.name] = info
    return found


class PluginHost:
    """Discovers, loads and calls the plugins of one entry-point group."""

    def __init__(self, group: str = DATA_PLANE_GROUP, hookspecs: types.ModuleType | None = None) -> None:
        """``hookspecs`` is the module of the side this host serves: the data plane's
        (``sofamesh.hookspecs``, see ``core/build.py``'s ``proxy_host()``) or Pilot's."""
        if hookspecs is None:
            raise TypeError("PluginHost needs its side's hookspecs module: use sofamesh.core.build.proxy_host() "
                            "for the data plane or sofamesh.pilot.app.pilot_host() for Pilot")
        self.group = group
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._available: dict[str, PluginInfo] | None = None
        self._loaded: dict[str, Provenance] = {}

    # -- discovery -----------------------------------------------------------------------------
    def available(self) -> dict[str, PluginInfo]:
        """Every installed plugin of the group, by name, read from metadata only."""
        if self._available is None:
            self._available = _scan(self.group)
        return dict(self._available)

    def rescan(self) -> None:
        """Forget the cached metadata scan, so distributions installed since are seen (on reload)."""
        self._available = None

    def loaded(self) -> list[str]:
        return list(self._loaded)

    # -- loading -------------------------------------------------------------------------------
    def load(self, names: Iterable[str]) -> None:
        """Import the named plugins (and nothing else) and register them with pluggy."""
        wanted = [n for n in dict.fromkeys(names) if n not in self._loaded]
        if not wanted:
            return
        available = self.available()
        unknown = [n for n in wanted if n not in available]
        if unknown:
            known = ", ".join(sorted(available)) or "none installed"
            raise PluginError(f"unknown plugin {', '.join(map(repr, unknown))} (known: {known})")
        failures: list[str] = []

        def on_failure(_mgr: Any, ep: importlib.metadata.EntryPoint, exc: BaseException) -> None:
            info = available.get(ep.name)
            dist = f"{info.distribution} {info.version}" if info else "?"
            failures.append(f"plugin {ep.name!r} from {dist} ({ep.value}) failed to import: "
                            f"{type(exc).__name__}: {exc}")

        mgr: NamedExtensionManager[Any] = NamedExtensionManager(
            self.group, names=wanted, on_load_failure_callback=on_failure, name_order=True
        )
        if failures:
            raise PluginError("; ".join(failures))
        for ext in mgr.extensions:
            info = available[ext.name]
            self.register(ext.plugin, Provenance(ext.name, info.distribution, info.version))

    def load_all(self) -> None:
        self.load(sorted(self.available()))

    def register(self, plugin: object, provenance: Provenance) -> None:
        """Register an already imported plugin module or object (also used by tests and reload)."""
        if provenance.plugin in self._loaded:
            return
        try:
            self.pm.register(plugin, name=provenance.plugin)
        except ValueError as exc:
            raise PluginError(f"plugin {provenance.plugin!r} from {provenance.distribution}: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {provenance.plugin!r} from {provenance.distribution} has a bad hook: {exc}"
            ) from exc
        self._loaded[provenance.plugin] = provenance

    def unregister(self, name: str) -> object | None:
        self._loaded.pop(name, None)
        return self.pm.unregister(name=name)

    # -- calling -------------------------------------------------------------------------------
    def fill(self, hook_name: str, catalog: Catalog[Any]) -> Catalog[Any]:
        """Call ``hook_name(catalog=...)`` on each loaded plugin in turn, so the catalog knows who
        registered each name (a duplicate name is then reported with both distributions)."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            prov = self._loaded.get(impl.plugin_name, Provenance(impl.plugin_name, "<in-process>", ""))
            catalog._set_source(prov)
            others = [p for n, p in self.pm.list_name_plugin() if n != impl.plugin_name]
            self.pm.subset_hook_caller(hook_name, remove_plugins=others)(catalog=catalog)
        return catalog


__all__ = ["DATA_PLANE_GROUP", "PILOT_GROUP", "PluginHost", "PluginInfo", "hookimpl"]
