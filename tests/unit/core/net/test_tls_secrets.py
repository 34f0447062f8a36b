"""TLS contexts built from the agent's in-memory secrets: served at once, rotated at the next handshake."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sofamesh.certs import load_or_mint_ca, mint_workload
from sofamesh.core.config.model import TlsConfig
from sofamesh.core.net.secrets import CertificateSecret, SecretStore, TrustSecret
from sofamesh.core.net.tls import TlsSource, peer_identity


def _publish(store: SecretStore, tmp: Path, name: str, sa: str) -> int:
    ca = load_or_mint_ca(tmp / "ca")
    files = mint_workload(ca, f"spiffe://cluster.local/ns/default/sa/{sa}", tmp / "ca", name)
    store.set("ROOTCA", TrustSecret(Path(ca.files.cert).read_bytes()))
    store.set("default", CertificateSecret(Path(files.cert).read_bytes(), Path(files.key).read_bytes()))
    return int(x509.load_pem_x509_certificate(Path(files.cert).read_bytes()).serial_number)


async def _handshake(server_ctx: ssl.SSLContext, client: TlsSource) -> tuple[str | None, int]:
    """(the client identity the server saw, the serial of the server certificate the client saw)."""
    seen: list[str | None] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_identity(writer.transport))
        writer.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=client.context()), 5)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    await asyncio.wait_for(reader.read(), 5)
    writer.close()
    srv.close()
    await srv.wait_closed()
    serial = x509.load_der_x509_certificate(der).serial_number
    return (seen[0] if seen else None), serial


def test_a_rotated_secret_is_served_at_the_next_handshake_without_rebuilding_the_listener(tmp_path: Path) -> None:
    store = SecretStore()
    first = _publish(store, tmp_path, "a", "web")
    cfg = TlsConfig(secret="default", ca_secret="ROOTCA", require_client_cert=True)
    server = TlsSource(cfg, server=True, secrets=store)
    client = TlsSource(TlsConfig(secret="default", ca_secret="ROOTCA"), server=False, secrets=store)
    server_ctx = server.server_context()

    async def go() -> None:
        assert await _handshake(server_ctx, client) == ("spiffe://cluster.local/ns/default/sa/web", first)
        second = _publish(store, tmp_path, "b", "web2")
        assert await _handshake(server_ctx, client) == ("spiffe://cluster.local/ns/default/sa/web2", second)
        assert server.reloads == 1 and client.reloads == 1  # the same root: only default changed

    asyncio.run(asyncio.wait_for(go(), 20))
    key = store.get("default")
    assert isinstance(key, CertificateSecret)
    assert serialization.load_pem_private_key(key.key_pem, None) is not None
    assert not list(tmp_path.glob("**/*sofamesh-tls*"))  # the key was loaded from memory, not a file


def test_an_upstream_naming_another_spiffe_id_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    from sofamesh.core.net.tls import PeerCheck

    store = SecretStore()
    _publish(store, tmp_path, "client", "consumer")
    ca = load_or_mint_ca(tmp_path / "ca")
    server_files = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/impostor", tmp_path / "ca", "impostor")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_files.cert, server_files.key)

    class App(asyncio.Protocol):
        made = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            App.made = True

    async def connect(match: list[str]) -> tuple[str | None, bool]:
        received: list[bytes] = []

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read())

        srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=server_ctx)
        port = srv.sockets[0].getsockname()[1]
        source = TlsSource(TlsConfig(secret="default", ca_secret="ROOTCA", match_sans=match), server=False,
                           secrets=store)
        App.made = False
        check = PeerCheck(source, App())
        transport, _ = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
            lambda: check, "127.0.0.1", port, ssl=source.context(), server_hostname="127.0.0.1"), 5)
        transport.close()
        await asyncio.sleep(0.05)
        srv.close()
        await srv.wait_closed()
        assert received in ([], [b""])
        return check.refused, App.made

    refused, made = asyncio.run(connect(["spiffe://cluster.local/ns/default/sa/provider"]))
    assert refused == ("peer identity spiffe://cluster.local/ns/default/sa/impostor, localhost is not one of "
                       "spiffe://cluster.local/ns/default/sa/provider") and not made
    assert asyncio.run(connect(["spiffe://cluster.local/ns/default/*"])) == (None, True)
