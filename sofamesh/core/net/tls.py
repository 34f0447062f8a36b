"""TLS contexts for listeners and upstream clusters, re-read when their files or secrets change,
and the SPIFFE identity of a peer certificate.

A listener's ``ssl.SSLContext`` is handed to asyncio once, so rotation happens inside the
handshake: the served context's SNI callback (OpenSSL calls it for every ClientHello, with or
without a server name) swaps in the newest context. Upstream connections ask ``TlsSource.context()``
for each new connection. File changes are noticed by mtime/size, checked at most once a second;
secrets (``core/net/secrets.py``, kept by the agent) by the store's change count, at every call.
A private key from a secret is loaded through an anonymous in-memory file: it never touches disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sofamesh.core.errors import ConfigError
from sofamesh.core.net.secrets import PROCESS_SECRETS, CertificateSecret, SecretStore, TrustSecret

if TYPE_CHECKING:
    from sofamesh.core.config.model import TlsConfig

log = logging.getLogger("sofamesh.tls")

_CHECK_EVERY_S = 1.0


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, -1))
    return tuple(out)


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read ``data`` from: an anonymous memory file (Linux), else a private
    temporary file removed at once."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("sofamesh-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="sofamesh-tls-") as d:
        path = os.path.join(d, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path


class TlsSource:
    """Builds the context for one ``TlsConfig`` and rebuilds it when a cert, key or CA file, or a
    secret it names, changes.

    ``server=True``: a listener context (client certs verified against ``ca`` when given; required
    when ``require_client_cert``). ``server=False``: an upstream origination context (our cert and
    key presented as the client certificate; the upstream's chain verified against ``ca``; host
    names are not checked, as mesh certificates name workloads by SPIFFE URI, not DNS).
    ``secrets``: where ``secret`` / ``ca_secret`` are looked up (the process's store by default).
    """

    __slots__ = ("_checked", "_ctx", "_generation", "_sans", "_stamp", "config", "path", "paths", "reloads",
                 "secrets", "server")

    def __init__(self, config: TlsConfig, *, server: bool, path: str = "",
                 secrets: SecretStore | None = None) -> None:
        self.config = config
        self.server = server
        self.path = path
        self.secrets = secrets if secrets is not None else PROCESS_SECRETS
        self.paths = tuple(p for p in (config.cert, config.key, config.ca) if p)
        self.reloads = 0
        self._stamp = _stamp(self.paths)
        self._generation = self.secrets.generation
        self._ctx = self._build()
        self._checked = time.monotonic()
        exact = frozenset(p for p in config.match_sans if not p.endswith("*"))
        prefixes = tuple(p[:-1] for p in config.match_sans if p.endswith("*"))
        self._sans: tuple[frozenset[str], tuple[str, ...]] | None = (exact, prefixes) if config.match_sans else None

    def accepts(self, identity: str | None, dns_names: tuple[str, ...] = ()) -> bool:
        """Whether a peer whose certificate names ``identity`` (its URI SAN), or one of
        ``dns_names`` (its DNS SANs), may be talked to: always without ``match_sans``; otherwise
        one of them must match one of the patterns."""
        if self._sans is None:
            return True
        exact, prefixes = self._sans
        for name in (identity, *dns_names) if identity else dns_names:
            if name in exact or (bool(prefixes) and name.startswith(prefixes)):
                return True
        return False

    def _uses_secrets(self) -> bool:
        return self.config.secret is not None or self.config.ca_secret is not None

    def _secret(self, name: str, kind: type[Any], field: str) -> Any:
        s = self.secrets.get(name)
        if not isinstance(s, kind):
            have = ", ".join(self.secrets.names()) or "none"
            raise ConfigError(f"{self.path}.{field}", f"secret {name!r} is not available in this process "
                              f"(have: {have}); a sidecar gets 'default' and 'ROOTCA' from its agent "
                              "(sofamesh proxy --token-file)")
        return s

    def _load_cert(self, ctx: ssl.SSLContext) -> None:
        c = self.config
        if c.secret is not None:
            cs: CertificateSecret = self._secret(c.secret, CertificateSecret, "secret")
            with _memory_file(cs.chain_pem + b"\n" + cs.key_pem) as p:
                ctx.load_cert_chain(p)
        elif c.cert is not None and c.key is not None:
            ctx.load_cert_chain(c.cert, c.key)
        # else: an upstream context with no client certificate (a DestinationRule's SIMPLE TLS)

    def _load_ca(self, ctx: ssl.SSLContext) -> bool:
        c = self.config
        if c.ca_secret is not None:
            ts: TrustSecret = self._secret(c.ca_secret, TrustSecret, "ca_secret")
            ctx.load_verify_locations(cadata=ts.roots_pem.decode())
            return True
        if c.ca:
            ctx.load_verify_locations(c.ca)
            return True
        return False

    def _build(self) -> ssl.SSLContext:
        c = self.config
        try:
            if self.server:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                self._load_cert(ctx)
                if self._load_ca(ctx):
                    ctx.verify_mode = ssl.CERT_REQUIRED if c.require_client_cert else ssl.CERT_OPTIONAL
                elif c.require_client_cert:
                    raise ConfigError(f"{self.path}.ca", "require_client_cert needs a CA bundle to verify against")
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                self._load_cert(ctx)
                ctx.verify_mode = ssl.CERT_REQUIRED if self._load_ca(ctx) else ssl.CERT_NONE
        except (OSError, ssl.SSLError) as exc:
            what = ", ".join([*self.paths, *(f"secret {n!r}" for n in (c.secret, c.ca_secret) if n)])
            raise ConfigError(self.path, f"cannot load TLS files ({what}): {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if c.alpn:
            ctx.set_alpn_protocols(c.alpn)
        return ctx

    def _rebuild(self, why: str) -> bool:
        try:
            ctx = self._build()
        except ConfigError as exc:
            log.warning("TLS %s changed but could not be loaded, keeping the previous ones: %s", why, exc)
            return False
        self._ctx = ctx
        self.reloads += 1
        log.info("TLS %s reloaded", why)
        return True

    def context(self) -> ssl.SSLContext:
        """The newest context; rebuilt first if a secret changed, or a file changed (files are
        checked at most once a second). A rebuild that fails (a half-written file) keeps the
        previous context and retries later."""
        if self._uses_secrets():
            gen = self.secrets.generation
            if gen != self._generation:
                self._generation = gen
                self._rebuild("secrets")
        if self.paths:
            now = time.monotonic()
            if now - self._checked >= _CHECK_EVERY_S:
                self._checked = now
                stamp = _stamp(self.paths)
                if stamp != self._stamp and self._rebuild("files " + ", ".join(self.paths)):
                    self._stamp = stamp
        return self._ctx

    def server_context(self) -> ssl.SSLContext:
        """The context to hand to ``create_server``: it swaps in the newest one at each handshake."""
        base = self._ctx

        def on_client_hello(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            newest = self.context()
            if sslobj.context is not newest:
                sslobj.context = newest

        base.sni_callback = on_client_hello
        return base


def peer_identity(transport: Any) -> str | None:
    """The first URI SAN (``spiffe://trust-domain/ns/<ns>/sa/<sa>``) of the verified peer certificate."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI":
            return str(value)
    return None


class PeerCheck(asyncio.Protocol):
    """Stands in for an upstream connection while its TLS peer is checked: the connection sees
    ``connection_made`` only when the verified certificate names an identity ``source`` accepts;
    otherwise the transport is aborted before a byte is written and ``refused`` says why."""

    __slots__ = ("app", "refused", "source")

    def __init__(self, source: TlsSource, app: asyncio.Protocol) -> None:
        self.source = source
        self.app = app
        self.refused: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pid = peer_identity(transport)
        cert = transport.get_extra_info("peercert") or {}
        dns = tuple(str(v) for k, v in cert.get("subjectAltName", ()) if k == "DNS")
        if not self.source.accepts(pid, dns):
            names = ", ".join([*([pid] if pid else []), *dns]) or "(no URI or DNS SAN)"
            self.refused = f"peer identity {names} is not one of {', '.join(self.source.config.match_sans)}"
            transport.abort()  # type: ignore[attr-defined]  # a TLS transport: asyncio.Transport
            return
        transport.set_protocol(self.app)
        self.app.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # refused above: the pool reports the failed connect


def start_tls(loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, app: asyncio.Protocol,
              ctx: ssl.SSLContext, data: bytes) -> None:
    """Terminate TLS with ``ctx`` on an accepted ``transport`` whose first bytes (``data``, the start
    of a ClientHello) were already read: an ``SSLProtocol`` goes between the socket and ``app``,
    which then sees a TLS transport and its peer certificate."""
    tls = SSLProtocol(loop, app, ctx, None, server_side=True)  # type: ignore[arg-type]  # no waiter
    transport.set_protocol(tls)
    tls.connection_made(transport)
    view = memoryview(data)
    while view:  # SSLProtocol is a BufferedProtocol: hand it the bytes already read
        buf = tls.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        tls.buffer_updated(n)
        view = view[n:]


# The first byte of every TLS connection: a handshake record (ContentType 22) carrying the ClientHello.
# No plaintext protocol we serve starts with it (Bolt 0x01/0x02, Dubbo 0xda, HTTP/1 and h2c ASCII).
_TLS_HANDSHAKE = 0x16


class TlsSniffer(asyncio.Protocol):
    """The protocol of a listener that takes TLS and plaintext on one port (``tls.plaintext``, as
    Istio's PERMISSIVE mode does): the first byte tells a ClientHello from plaintext. A TLS
    connection gets ``ctx`` (an ``SSLProtocol`` between the socket and the connection, which then
    sees a TLS transport and its peer certificate); a plaintext one gets the socket as it is. Either
    way the connection made by ``factory`` sees ``connection_made`` once, with its own transport,
    and every byte, the first included."""

    __slots__ = ("_ctx", "_factory", "_loop", "_transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, ctx: ssl.SSLContext,
                 factory: Callable[[], asyncio.Protocol]) -> None:
        self._loop = loop
        self._ctx = ctx
        self._factory = factory
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or not data:
            return
        self._transport = None  # decided: nothing more reaches this object
        app = self._factory()
        if data[0] != _TLS_HANDSHAKE:
            transport.set_protocol(app)
            app.connection_made(transport)
            app.data_received(data)
            return
        start_tls(self._loop, transport, app, self._ctx, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None  # closed before its first byte: no connection was made


__all__ = ["PeerCheck", "TlsSniffer", "TlsSource", "peer_identity", "start_tls"]
