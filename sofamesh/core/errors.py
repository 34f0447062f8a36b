"""The MeshError tree. Every error names the thing that was wrong."""

from __future__ import annotations

from enum import Enum


class MeshError(Exception):
    """Base of every error sofamesh raises on purpose."""


class ConfigError(MeshError):
    """A config value is wrong. ``path`` is the YAML path (``listeners[0].routes[2].cluster``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class ConfigErrors(MeshError):
    """Several config errors found in one pass; ``errors`` holds each one."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class PluginError(MeshError):
    """A plugin could not be found, loaded or registered."""


class ProtocolError(MeshError):
    """Bytes that break a protocol. ``status_hint`` is the HTTP-class status a reply should carry.

    ``head`` is what the codec could read of the offending request (at least its request id), so the
    proxy can send a protocol-correct error reply before it closes the connection; ``None`` when
    not even that could be read.
    """

    def __init__(self, message: str, status_hint: int = 400, head: object = None) -> None:
        self.status_hint = status_hint
        self.head = head
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or out of order."""


class Source(Enum):
    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"
    INTERNAL = "internal"


class UpstreamError(MeshError):
    """An exchange with an upstream failed."""

    def __init__(self, message: str, source: Source = Source.UPSTREAM, retryable: bool = False) -> None:
        self.source = source
        self.retryable = retryable
        super().__init__(message)


__all__ = [
    "ConfigError",
    "ConfigErrors",
    "LocalProtocolError",
    "MeshError",
    "PluginError",
    "ProtocolError",
    "RemoteProtocolError",
    "Source",
    "UpstreamError",
]
