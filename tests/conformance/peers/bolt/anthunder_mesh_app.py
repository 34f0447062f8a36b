"""anthunder's mesh client against a sofamesh sidecar's app API (run with the anthunder venv).

usage: python anthunder_mesh_app.py APP_API_PORT EGRESS_PORT ROLE ...
  provider PORT INTERFACE TAG: an AioListener on 127.0.0.1:PORT publishes INTERFACE through the app
      API (MeshClient), prints "PUBLISHED", serves until stdin closes, then unpublishes.
  consumer INTERFACE: an AioClient subscribes INTERFACE through the app API, then calls
      echo("hi") on the sidecar's egress port; prints a JSON result.
anthunder's MeshClient always posts to 127.0.0.1:13330 and its clients call 127.0.0.1:12220; the
script points both class attributes at the ports the test chose (free ports), nothing else.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time

from anthunder.client.base import _BaseClient
from anthunder.mesh.mesh_client import MeshClient

logging.basicConfig(level=logging.CRITICAL)


def main() -> None:
    api_port, egress_port, role = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    MeshClient._server = f"http://127.0.0.1:{api_port}/{{}}".format
    _BaseClient.mesh_service_address = ("127.0.0.1", egress_port)
    if role == "provider":
        from anthunder.listener.aio_listener import AioListener
        from anthunder.listener.base_listener import BaseService

        port, interface, tag = int(sys.argv[4]), sys.argv[5], sys.argv[6]

        class Svc(BaseService):
            def echo(self, body: bytes) -> bytes:
                return tag.encode() + b":" + body

        listener = AioListener(("127.0.0.1", port), "sofamesh-mesh-provider")
        listener.handler.register_interface(interface, Svc)
        threading.Thread(target=listener.run_forever, daemon=True).start()
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.025)
        listener.publish()
        print("PUBLISHED", flush=True)
        sys.stdin.read()
        listener.unpublish()
        return
    from anthunder.client.aio_client import AioClient
    from mytracer import SpanContext

    interface = sys.argv[4]
    client = AioClient("sofamesh-mesh-consumer")
    assert client._mesh_client is not None, "the mesh client did not start (configs/application failed)"
    client.subscribe(interface)
    try:
        pkg = client.invoke_async(interface, "echo", b"hi", spanctx=SpanContext(), timeout_ms=3000).result(timeout=5)
        print(json.dumps({"ok": True, "result": pkg.content.decode()}), flush=True)
    except Exception as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}), flush=True)


if __name__ == "__main__":
    main()
