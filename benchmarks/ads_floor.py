"""The floor under Pilot's initial sync: what grpc.aio alone costs to serve the same ADS conversation.

Starts Pilot over the same mesh as ``pilot_scale.py`` (S services x I instances), records the first
response of each type one SotW and one delta client get from it (the same bytes Pilot sends every
client at sync), stops it, and serves those recorded responses from a grpc.aio server that does
nothing else: each request without a nonce is answered with the recorded bytes for its type, ACKs
are read and dropped. The same clients as ``pilot_scale.py`` (``--go``: benchmarks/adsload) then
sync against it, and the server's CPU during the sync is reported beside the sync time: Pilot's CPU
per client minus this floor is what Pilot's own work costs.

    .venv/bin/python benchmarks/ads_floor.py --services 1000 --instances 2 --clients 2000 --mixed --go [--asyncio]

``--asyncio`` runs the floor server on asyncio's own loop instead of uvloop (Pilot's loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pilot_scale

from sofamesh.core.net.loop import run as run_loop
from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT, LISTENER, ROUTE
from sofamesh.testing import free_port

_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
_TYPES = (CLUSTER, LISTENER, ENDPOINT, ROUTE)


async def record(port: int, services: int) -> dict[str, dict[str, str]]:
    """mode -> type URL -> the first response's bytes (hex), as an Envoy-like client asks for them."""
    clusters = [f"outbound|80|svc-{s:04d}" for s in range(services)]
    names = {CLUSTER: [], LISTENER: [], ENDPOINT: clusters, ROUTE: ["outbound|15001"]}
    node = base_pb2.Node(id="floor-recorder", cluster="bench")
    canned: dict[str, dict[str, str]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        for mode in ("sotw", "delta"):
            method = "DeltaAggregatedResources" if mode == "delta" else "StreamAggregatedResources"
            kind = discovery_pb2.DeltaDiscoveryRequest if mode == "delta" else discovery_pb2.DiscoveryRequest
            call = ch.stream_stream(_ADS + method, request_serializer=kind.SerializeToString)()
            got: dict[str, str] = {}
            for url in _TYPES:
                field = "resource_names_subscribe" if mode == "delta" else "resource_names"
                await call.write(kind(node=node, type_url=url, **{field: names[url]}))
                raw: bytes = await asyncio.wait_for(call.read(), 60)
                got[url] = raw.hex()
            call.cancel()
            canned[mode] = got
    return canned


def serve(port: int, canned_file: Path, use_uvloop: bool) -> None:
    canned = {mode: {url: bytes.fromhex(h) for url, h in by_type.items()}
              for mode, by_type in json.loads(canned_file.read_text()).items()}

    def handler(mode: str, parse: Any) -> Any:
        answers = canned[mode]

        async def stream(requests: Any, context: Any) -> Any:
            async for raw in requests:
                req = parse(raw)
                if not req.response_nonce:
                    yield answers[req.type_url]

        return grpc.stream_stream_rpc_method_handler(stream, request_deserializer=None, response_serializer=None)

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 * 1024 * 1024),
                                          ("grpc.server.max_pending_requests", 100_000),
                                          ("grpc.server.max_pending_requests_hard_limit", 200_000)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {"StreamAggregatedResources": handler("sotw", discovery_pb2.DiscoveryRequest.FromString),
             "DeltaAggregatedResources": handler("delta", discovery_pb2.DeltaDiscoveryRequest.FromString)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    run_loop(main(), use_uvloop=use_uvloop)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ads-floor-"))
    args.replicas = 1
    pilots = pilot_scale.Pilots(args, tmp)
    try:
        await pilots.ready()
        canned = await record(pilots.xds[0], args.services)
    finally:
        pilots.stop()
    canned_file = tmp / "canned.json"
    canned_file.write_text(json.dumps(canned))
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(port), "--canned", str(canned_file)]
    server = subprocess.Popen([*cmd, *(["--asyncio"] if args.asyncio else [])], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    workers = None
    try:
        workers = pilot_scale.Workers(args, [port])
        cpu0, t0 = pilot_scale.pilot_cpu_s(server.pid), time.time()
        end, size = await workers.phase("sync", t0)
        await asyncio.sleep(0.5)
        cpu = pilot_scale.pilot_cpu_s(server.pid) - cpu0
        return {"server": "grpc.aio, recorded responses only", "loop": "asyncio" if args.asyncio else "uvloop",
                "clients": args.clients, "mode": "delta" if args.delta else "mixed" if args.mixed else "sotw",
                "bytes_per_client_initial": size, "initial_sync_s": round(end - t0, 3),
                "initial_sync_server_cpu_s": round(cpu, 2),
                "server_cpu_ms_per_client": round(cpu * 1000 / args.clients, 2),
                "initial_sync_failed_streams": workers.failures,
                "initial_sync_client_cpu_s": round(workers.client_cpu_s, 2)}
    finally:
        if workers is not None:
            workers.close()
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--delta", action="store_true")
    p.add_argument("--mixed", action="store_true")
    p.add_argument("--go", action="store_true")
    p.add_argument("--per-process", type=int)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--asyncio", action="store_true", help="the floor server on asyncio's loop, not uvloop")
    p.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--canned", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.canned, not args.asyncio)
        return
    args.per_process = args.per_process or (1000 if args.go else 250)
    args.debounce_ms, args.streams_per_connection = 100, 1
    print(json.dumps(asyncio.run(bench(args)), indent=1))


if __name__ == "__main__":
    main()
