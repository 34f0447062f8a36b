"""Reload without restart: which third-party plugin packages changed on disk, and re-importing them.

A changed package is imported afresh (new module objects), not reloaded in place: objects built
from the old modules (the filter chains of requests in flight) keep the old code and globals,
while the plugin host registers the new modules so the next catalog build uses the new code.
If anything fails, ``undo()`` puts the old modules and registrations back. Built-in plugins
(distribution ``sofamesh``) are never re-imported: they change with an upgrade and a restart.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from sofamesh.core.catalog import Provenance
from sofamesh.core.errors import PluginError
from sofamesh.core.plugin_host import PluginHost

_BUILT_IN = "sofamesh"


@dataclass(frozen=True, slots=True)
class _Tracked:
    plugin: str
    target: str  # "pkg.module" or "pkg.module:attr"
    package: str  # top-level package: everything under it is re-imported together
    provenance: Provenance


def _package_modules(package: str) -> list[str]:
    return [n for n in list(sys.modules) if n == package or n.startswith(package + ".")]


def _digest(names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        path = getattr(sys.modules.get(n), "__file__", None)
        if path:
            out[path] = _digest_file(path)
    return out


def _resolve(target: str) -> object:
    mod_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(mod_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class PluginSources:
    """Fingerprints of the source files of every loaded third-party plugin package."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self._seen: dict[str, dict[str, str]] = {}  # package -> {file: sha256}

    def _tracked(self) -> list[_Tracked]:
        available = self.host.available()
        out = []
        for name in self.host.loaded():
            info = available.get(name)
            if info is None or info.distribution.lower() == _BUILT_IN:
                continue
            package = info.target.partition(":")[0].split(".")[0]
            if package == _BUILT_IN:
                continue
            out.append(_Tracked(name, info.target, package, Provenance(name, info.distribution, info.version)))
        return out

    def snapshot(self) -> None:
        """Remember what the loaded plugin packages look like now (after a start or a good reload)."""
        self._seen = {t.package: _digest(_package_modules(t.package)) for t in self._tracked()}

    def changed(self) -> list[str]:
        """Top-level packages whose source files differ from the last snapshot."""
        out = []
        for package in sorted({t.package for t in self._tracked()}):
            before = self._seen.get(package)
            if before is not None and {p: _digest_file(p) for p in before} != before:
                out.append(package)
        return out

    def reimport(self, packages: list[str]) -> Callable[[], None]:
        """Import ``packages`` afresh and re-register their plugins; returns ``undo``.

        Raises ``PluginError`` naming the plugin, its distribution and the import error; the old
        modules and registrations are back in place when it does.
        """
        if not packages:
            return lambda: None
        tracked = [t for t in self._tracked() if t.package in packages]
        old_modules: dict[str, ModuleType] = {}
        for package in packages:
            for n in _package_modules(package):
                old_modules[n] = sys.modules.pop(n)
                _drop_bytecode(old_modules[n])
        old_plugins = {t.plugin: self.host.unregister(t.plugin) for t in tracked}
        importlib.invalidate_caches()

        def undo() -> None:
            for package in packages:
                for n in _package_modules(package):
                    del sys.modules[n]
            sys.modules.update(old_modules)
            for t in tracked:
                self.host.unregister(t.plugin)
                old = old_plugins.get(t.plugin)
                if old is not None:
                    self.host.register(old, t.provenance)

        for t in tracked:
            try:
                plugin = _resolve(t.target)
                self.host.register(plugin, t.provenance)
            except PluginError:
                undo()
                raise
            except Exception as exc:
                undo()
                raise PluginError(f"plugin {t.plugin!r} from {t.provenance.distribution} {t.provenance.version} "
                                  f"({t.target}) failed to re-import: {type(exc).__name__}: {exc}") from exc
        return undo


def _digest_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "missing"


def _drop_bytecode(module: ModuleType) -> None:
    """Remove a module's cached bytecode, which can look fresh when a file is rewritten within a second."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return
    try:
        os.unlink(importlib.util.cache_from_source(path))
    except (OSError, NotImplementedError, ValueError):
        pass


__all__ = ["PluginSources"]
