"""What a started sidecar holds depends on what its config uses (docs/performance.md, "Memory of a
sidecar at rest"): Pilot's model, xxhash, the active health checker and the HPACK Huffman decode
table are loaded by the first config or request that needs them, not at start-up."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from typing import Any

LAZY = ["sofamesh.pilot.model", "xxhash", "sofamesh.core.upstream.health_check", "sofamesh.core.xds.client"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(uses: bool) -> dict[str, Any]:
    route: dict[str, Any] = {"name": "default", "cluster": "web"}
    cluster: dict[str, Any] = {"name": "web", "endpoints": [f"127.0.0.1:{_port()}"]}
    if uses:
        route["hash_policy"] = [{"header": {"header_name": "x-user"}}]
        cluster["lb"] = "ring_hash"
        cluster["health_checks"] = [{"tcp_health_check": {}, "interval_ms": 60000, "timeout_ms": 1000}]
    return {
        "listeners": [
            {"name": "edge", "address": f"127.0.0.1:{_port()}", "protocols": ["http1", "http2"], "routes": [route]}
        ],
        "clusters": [cluster],
    }


def _started(config: dict[str, Any]) -> dict[str, Any]:
    """Start a sidecar from the command line's own parser (as ``sofamesh proxy``) in a fresh
    interpreter, and report what it imported and whether the Huffman table exists; then decode one
    Huffman-coded literal (RFC 7541 C.4.1's "www.example.com")."""
    code = textwrap.dedent(
        """
        import asyncio, json, sys
        from sofamesh import cli
        cli.build_parser()
        from sofamesh.core.config.loader import from_mapping
        from sofamesh.core.net import loop
        from sofamesh.core.server import Server
        from sofamesh.plugins.protocols.http2 import huffman

        async def main():
            server = Server(from_mapping(json.loads(sys.argv[1])))
            await server.start(None, None)
            held = sorted(m for m in sys.modules if m in LAZY)
            table = len(huffman._TABLE)
            decoded = huffman.decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")).decode()
            await server.shutdown()
            print(json.dumps({"held": held, "table": table, "decoded": decoded,
                              "table_after": len(huffman._TABLE)}))

        loop.run(main())
        """
    ).replace("LAZY", repr(LAZY))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_sidecar_whose_config_does_not_use_them_does_not_load_them() -> None:
    report = _started(_config(uses=False))
    assert report["held"] == []
    assert report["table"] == 0
    assert report["decoded"] == "www.example.com"
    assert report["table_after"] == 256 * 16


def test_a_config_that_uses_them_loads_them_at_start_up() -> None:
    report = _started(_config(uses=True))
    assert report["held"] == ["sofamesh.core.upstream.health_check", "xxhash"]
