"""TlsSniffer on asyncio's own loop and on uvloop: one port, a TLS client and a plaintext client,
each answered by the same kind of connection, which sees its first byte and (TLS) its peer cert."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from sofamesh.certs import load_or_mint_ca, mint_workload
from sofamesh.core.net.tls import TlsSniffer, peer_identity

ID = "spiffe://cluster.local/ns/default/sa/shop"


class Echo(asyncio.Protocol):
    """Answers each chunk with the peer identity it saw and the chunk."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.who = peer_identity(transport) if transport.get_extra_info("ssl_object") else "plaintext"

    def data_received(self, data: bytes) -> None:
        self.transport.write(f"{self.who} ".encode() + data)

    def connection_lost(self, exc: Exception | None) -> None:
        LOST.append(self.who)


LOST: list[str] = []


async def _exchange(port: int, ctx: ssl.SSLContext | None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="localhost" if ctx else None)
    writer.write(b"GET /first-byte-kept")
    await writer.drain()
    out = await asyncio.wait_for(reader.read(1000), 5)
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 5)
    return out


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, pytest.importorskip("uvloop").new_event_loop],
                         ids=["asyncio", "uvloop"])
def test_one_port_answers_a_tls_client_and_a_plaintext_client(
        tmp_path: Path, new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    ca = load_or_mint_ca(tmp_path)
    server = mint_workload(ca, "spiffe://cluster.local/ns/default/sa/web", tmp_path, "web")
    client = mint_workload(ca, ID, tmp_path, "shop")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server.cert, server.key)
    sctx.load_verify_locations(ca.files.cert)
    sctx.verify_mode = ssl.CERT_OPTIONAL
    cctx = ssl.create_default_context(cafile=ca.files.cert)
    cctx.load_cert_chain(client.cert, client.key)

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: TlsSniffer(loop, sctx, Echo), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            out = [await asyncio.wait_for(_exchange(port, c), 10) for c in (cctx, None, cctx)]
            for _ in range(100):  # the server side of each connection closes after its client
                if len(LOST) == 3:
                    break
                await asyncio.sleep(0.02)
            return out
        finally:
            srv.close()
            await asyncio.wait_for(srv.wait_closed(), 5)

    LOST.clear()
    loop = new_loop()
    try:
        answers = loop.run_until_complete(main())
    finally:
        loop.close()
    assert answers == [f"{ID} GET /first-byte-kept".encode(), b"plaintext GET /first-byte-kept",
                       f"{ID} GET /first-byte-kept".encode()]
