"""An anthunder AioListener on 127.0.0.1 serving one SOFA interface (run with the anthunder venv).

usage: python anthunder_listener.py PORT INTERFACE[,INTERFACE...] TAG
Prints "READY <port>" once listening. Methods take the request body bytes: echo -> b"TAG:<body>",
whoami -> b"TAG", fail raises, slow sleeps <body> milliseconds then answers, remember stores the
body (meant for oneway calls), recall -> the stored bodies joined by ",".
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time

from anthunder.listener.aio_listener import AioListener
from anthunder.listener.base_listener import BaseService

logging.basicConfig(level=logging.CRITICAL)


def main() -> None:
    port, interfaces, tag = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    remembered: list[bytes] = []

    class Svc(BaseService):
        def echo(self, body: bytes) -> bytes:
            return tag.encode() + b":" + body

        def whoami(self, body: bytes) -> bytes:
            return tag.encode()

        def fail(self, body: bytes) -> bytes:
            raise RuntimeError("fail: " + body.decode())

        def remember(self, body: bytes) -> bytes:
            remembered.append(body)
            return b"ok"

        def recall(self, body: bytes) -> bytes:
            return b",".join(remembered) or b"-"

        def slow(self, body: bytes) -> bytes:
            time.sleep(int(body or b"0") / 1000)
            return tag.encode() + b":slept"

    listener = AioListener(("127.0.0.1", port), "sofamesh-test-provider")
    for interface in interfaces.split(","):
        listener.handler.register_interface(interface, Svc)
    threading.Thread(target=listener.run_forever, daemon=True).start()
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.025)
    else:
        sys.exit(f"listener did not come up on 127.0.0.1:{port}")
    print(f"READY {port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
