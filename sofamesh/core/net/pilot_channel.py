"""gRPC channels to Pilot: plaintext (its 15010), or TLS to its TLS xDS port (its 15012), where
Pilot's certificate is verified against Pilot's roots and checked for the host name dialled (or
``server_name``); the agent may present its workload certificate there (a renewal Pilot then
authenticates by it). The roots are read from the file when the channel is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from sofamesh.core.config.model import parse_address
from sofamesh.core.errors import ConfigError

if TYPE_CHECKING:
    from sofamesh.core.config.model import PilotTlsConfig


def read_roots(tls: PilotTlsConfig, path: str) -> bytes:
    """The PEM roots of ``tls.ca``; :class:`ConfigError` at ``path`` when unreadable or not PEM."""
    try:
        data = Path(tls.ca).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}.ca", f"cannot read Pilot's roots {tls.ca}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(
            f"{path}.ca", f"{tls.ca} holds no PEM certificate (Pilot serves its roots at GET /v1/ca/roots)"
        )
    return data


def pilot_channel(
    address: str,
    tls: PilotTlsConfig | None,
    options: list[tuple[str, Any]] | None = None,
    *,
    path: str = "xds.tls",
    extra_roots: bytes = b"",
    client_chain: bytes | None = None,
    client_key: bytes | None = None,
) -> grpc.aio.Channel:
    """A channel to Pilot at ``address``: plaintext without ``tls``; else TLS verified against
    ``tls.ca`` (plus ``extra_roots``), with ``client_chain`` / ``client_key`` as the client
    certificate when given."""
    opts = list(options or ())
    if tls is None:
        return grpc.aio.insecure_channel(address, options=opts)
    roots = read_roots(tls, path) + (b"\n" + extra_roots if extra_roots else b"")
    creds = grpc.ssl_channel_credentials(roots, client_key, client_chain)
    host, _ = parse_address(address)
    name = tls.server_name or host
    if name != host:
        opts.append(("grpc.ssl_target_name_override", name))
    return grpc.aio.secure_channel(address, creds, options=opts)


__all__ = ["pilot_channel", "read_roots"]
