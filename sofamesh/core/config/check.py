"""Resolve a config's plugin names against the catalogs; collect every error with its YAML path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sofamesh.core.catalog import Catalog
from sofamesh.core.codec import CodecFactory
from sofamesh.core.config.model import FilterConfig, ProxyConfig
from sofamesh.core.errors import ConfigError, ConfigErrors, PluginError
from sofamesh.core.plugin_host import PluginHost
from sofamesh.core.proxy.filter_chain import Filter, FilterFactory
from sofamesh.core.upstream.load_balancer import LoadBalancerFactory


@dataclass
class Catalogs:
    protocols: Catalog[CodecFactory]
    filters: Catalog[FilterFactory]
    load_balancers: Catalog[LoadBalancerFactory]

    @classmethod
    def build(cls, host: PluginHost) -> Catalogs:
        c = cls(Catalog("protocol"), Catalog("filter"), Catalog("load balancer"))
        host.fill("sofamesh_register_protocols", c.protocols)
        host.fill("sofamesh_register_filters", c.filters)
        host.fill("sofamesh_register_load_balancers", c.load_balancers)
        return c


def _names_used(config: ProxyConfig) -> tuple[set[str], bool]:
    names: set[str] = set(config.plugins) | set(config.extensions)
    auto = False
    for lst in config.listeners:
        if lst.protocols == "auto":
            auto = True
        else:
            names.update(lst.protocols)
        names.update(f.type for f in lst.filters)
        for r in lst.routes:
            names.update(f.type for f in r.filters)
    for c in config.clusters:
        names.add(c.lb)
        if c.protocol:
            names.add(c.protocol)
    return names, auto


def resolve(config: ProxyConfig, host: PluginHost) -> Catalogs:
    """Load exactly the plugins the config names (all of them for ``auto`` or on an unknown name),
    build the catalogs and check every name. Raises ``ConfigErrors``."""
    names, auto = _names_used(config)
    available = host.available()
    if auto or not names <= set(available):
        host.load_all()
    else:
        host.load(sorted(names))
    cats = Catalogs.build(host)
    errors: list[ConfigError] = []

    def check(cat: Catalog[Any], name: str, path: str) -> None:
        try:
            cat.get(name, path)
        except ConfigError as exc:
            errors.append(exc)

    installed = ", ".join(sorted(available)) or "none installed"
    for key, names_ in (("plugins", config.plugins), ("extensions", list(config.extensions))):
        for name in names_:
            if name not in available:
                errors.append(ConfigError(f"{key}.{name}", f"no installed plugin {name!r} (installed: {installed})"))
    cluster_names = [c.name for c in config.clusters]
    seen: set[str] = set()
    for i, c in enumerate(config.clusters):
        if c.name in seen:
            errors.append(ConfigError(f"clusters[{i}].name", f"duplicate cluster name {c.name!r}"))
        seen.add(c.name)
        check(cats.load_balancers, c.lb, f"clusters[{i}].lb")
        if c.protocol:
            check(cats.protocols, c.protocol, f"clusters[{i}].protocol")
    known_clusters = ", ".join(sorted(cluster_names)) or "none defined"
    seen_l: set[str] = set()
    seen_a: set[str] = set()
    for i, lst in enumerate(config.listeners):
        lname = lst.name or f"listener{i}"
        if lname in seen_l:
            errors.append(ConfigError(f"listeners[{i}].name", f"duplicate listener name {lname!r}"))
        seen_l.add(lname)
        if lst.address in seen_a:
            errors.append(ConfigError(f"listeners[{i}].address", f"address {lst.address!r} is used twice"))
        seen_a.add(lst.address)
        if lst.protocols != "auto":
            if not lst.protocols:
                errors.append(ConfigError(f"listeners[{i}].protocols", "empty list (give names or 'auto')"))
            for j, p in enumerate(lst.protocols):
                check(cats.protocols, p, f"listeners[{i}].protocols[{j}]")
        for j, f in enumerate(lst.filters):
            check(cats.filters, f.type, f"listeners[{i}].filters[{j}].type")
        for k, r in enumerate(lst.routes):
            rp = f"listeners[{i}].routes[{k}]"
            if r.cluster is not None and r.cluster not in cluster_names:
                errors.append(ConfigError(f"{rp}.cluster", f"unknown cluster {r.cluster!r} (known: {known_clusters})"))
            for m, w in enumerate(r.weighted_clusters):
                if w.name not in cluster_names:
                    errors.append(ConfigError(f"{rp}.weighted_clusters[{m}].name",
                                              f"unknown cluster {w.name!r} (known: {known_clusters})"))
            for j, f in enumerate(r.filters):
                check(cats.filters, f.type, f"{rp}.filters[{j}].type")
    if errors:
        raise ConfigErrors(errors)
    return cats


def build_filters(cats: Catalogs, configs: list[FilterConfig], path: str) -> list[Filter]:
    """Instantiate filters; every factory error comes back as one ``ConfigErrors``."""
    out: list[Filter] = []
    errors: list[ConfigError] = []
    for j, fc in enumerate(configs):
        p = f"{path}[{j}]"
        try:
            out.append(cats.filters.get(fc.type, f"{p}.type").create(fc.config, p))
        except ConfigError as exc:
            errors.append(exc)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except (PluginError, ValueError, TypeError) as exc:
            errors.append(ConfigError(f"{p}.config", f"filter {fc.type!r} refused its config: {exc}"))
    if errors:
        raise ConfigErrors(errors)
    return out


__all__ = ["Catalogs", "build_filters", "resolve"]
