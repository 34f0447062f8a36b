"""Typed catalogs: the names users write in YAML, mapped to the factories plugins registered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from sofamesh.core.errors import ConfigError, PluginError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Which plugin registered a name: the entry-point name, its distribution and version."""

    plugin: str
    distribution: str
    version: str


_UNKNOWN = Provenance("<in-process>", "<in-process>", "")


class Catalog(Generic[T]):
    """name -> factory for one kind of plugin (``protocol``, ``filter``, ``load_balancer``, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, tuple[T, Provenance]] = {}
        self._source: Provenance = _UNKNOWN

    def _set_source(self, source: Provenance) -> None:
        """The plugin host says whose hook is running before it calls it."""
        self._source = source

    def add(self, name: str, factory: T) -> None:
        """Register ``factory`` under ``name``. A name registered twice is a ``PluginError``."""
        if not name or name != name.strip():
            raise PluginError(f"{self.kind} name {name!r} registered by {self._source.distribution} is empty "
                              "or has surrounding spaces")
        if name in self._entries:
            prev = self._entries[name][1]
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {prev.distribution} (plugin {prev.plugin}) "
                f"and by {self._source.distribution} (plugin {self._source.plugin})"
            )
        self._entries[name] = (factory, self._source)

    def get(self, name: str, path: str = "") -> T:
        """The factory for ``name``; a ``ConfigError`` at ``path`` listing known names otherwise."""
        try:
            return self._entries[name][0]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none installed"
            raise ConfigError(path, f"unknown {self.kind} {name!r} (known: {known})") from None

    def provenance(self, name: str) -> Provenance:
        return self._entries[name][1]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n][0]) for n in sorted(self._entries)]


__all__ = ["Catalog", "Provenance"]
