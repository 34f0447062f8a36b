"""ServerView: the shape of a running data-plane process as the admin server, the xDS client and
plugin hooks see it.

A ``typing.Protocol`` in a module of its own, so those readers name what they use of the process
without importing ``core/server.py``, which builds them. ``Server`` satisfies it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sofamesh.core.config.model import ProxyConfig
    from sofamesh.core.proxy.runtime import ListenerRuntime
    from sofamesh.core.upstream.cluster import Cluster


class ConfigSource(Protocol):
    """Where a process's config comes from when it is not a file: the xDS client."""

    def describe(self) -> dict[str, Any]:
        """What ``/config_dump`` shows of it (applied versions per type, the last NACK)."""
        ...

    async def stop(self) -> None:
        """Stop changing the config (the process is draining)."""
        ...


class HotUpgradeView(Protocol):
    """The owner of a process's upgrade socket (``core/upgrade.py``) as admin sees it."""

    def describe(self) -> dict[str, Any]:
        """What ``/hot_upgrade`` shows: this process's pid, the phase, listeners and connections moved,
        drained and cut."""
        ...

    def spawn(self) -> int:
        """Start this process's command again with ``--hot-upgrade`` to take over from it; returns the
        new pid. Raises ``MeshError`` when an upgrade is already running."""
        ...


class ServedListener(Protocol):
    """One listener as readers see it: the runtime that new requests get."""

    @property
    def rt(self) -> ListenerRuntime: ...


class ServerView(Protocol):
    """What admin, the xDS client and plugins may read of (or ask of) one data-plane process."""

    config: ProxyConfig
    config_version: int
    ready: bool
    worker: int | None
    xds: ConfigSource | None
    hot_upgrade: HotUpgradeView | None

    @property
    def admin_bound(self) -> str | None:
        """``host:port`` the admin server listens on (its real port when configured as ``:0``);
        ``None`` without an admin server."""
        ...

    @property
    def listeners(self) -> Mapping[str, ServedListener]:
        """Every listener by name."""
        ...

    @property
    def clusters(self) -> Mapping[str, Cluster]:
        """Every cluster by name."""
        ...

    def apply(self, config: ProxyConfig) -> None:
        """Swap in ``config`` atomically; raises ``ConfigErrors`` and changes nothing when it is bad."""
        ...

    def hold_listeners(self) -> bool:
        """Listeners added from now on accept only at ``release`` (True), or they are held already."""
        ...

    async def release(self) -> None:
        """Start accepting on the held listeners."""
        ...

    def reload(self, text: str | None = None) -> tuple[int, list[str]]:
        """Re-read the config (``text``, else the file) and changed plugin packages; all or nothing."""
        ...

    def plugin_rows(self) -> list[dict[str, str]]:
        """Each loaded plugin: name, kind, distribution, version (``/plugins``)."""
        ...

    def protocol_names(self) -> Collection[str]:
        """The protocol plugin names installed (what an xDS listener may name)."""
        ...


__all__ = ["ConfigSource", "HotUpgradeView", "ServedListener", "ServerView"]
