"""The small HTTP server of admin and app APIs with peers that misbehave: one that resets while its
request is being answered, one with a malformed content-length. Each closes only itself, and nothing
is logged as an unhandled exception (found by the chaos soak: uvloop raises on a write to a reset
transport)."""

from __future__ import annotations

import asyncio
import socket
import struct

from sofamesh.core.admin import HttpMini
from sofamesh.core.net import loop as loop_mod
from sofamesh.testing import no_logged_tracebacks


def test_a_peer_that_resets_while_answered_and_a_bad_content_length_close_only_themselves() -> None:
    async def main() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def handler(path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
            if path == "/slow":
                entered.set()
                await asyncio.wait_for(release.wait(), 5)
            return 200, "text/plain", b"ok\n"

        server = HttpMini("127.0.0.1:0", handler)
        await server.start()
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            await w.drain()
            await asyncio.wait_for(entered.wait(), 5)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()  # RST while the handler runs
            await asyncio.sleep(0.2)
            release.set()
            await asyncio.sleep(0.2)
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"POST /x HTTP/1.1\r\ncontent-length: ten\r\n\r\n")
            assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 400 ")
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", server.port)  # the server still answers
            w.write(b"GET /fast HTTP/1.1\r\nconnection: close\r\n\r\n")
            assert (await asyncio.wait_for(r.read(), 5)).endswith(b"\r\n\r\nok\n")
            w.close()
        finally:
            await server.stop()

    with no_logged_tracebacks():
        loop_mod.run(main())
