"""Drives one real Nacos 2 client, PyPI nacos-sdk-python 3.x (its v2 async API speaks only Nacos's gRPC
protocol), for the conformance tests.

Runs in the venv of scripts/setup.d/37-registry-api-peers.sh, not the project's. Usage:
    nacos_grpc_client.py SERVER NAME PORT VERSION
registers NAME at 127.0.0.1:PORT (metadata version=VERSION; PORT 0: registers nothing) with the
server SERVER (HOST:PORT of the HTTP API: the client adds 1000 for gRPC), and answers JSON-line
commands on stdin with JSON lines on stdout:
    {"cmd": "discover", "name": N}   -> {"event": "discover", "instances": [{ip, port, healthy, metadata}]}
    {"cmd": "subscribe", "name": N}  -> {"event": "subscribe"}, then {"event": "changed", "instances": [...]}
                                        on every push
    {"cmd": "services"}              -> {"event": "services", "names": [...]}
    {"cmd": "close"}                 -> shuts the client down without deregistering, then exits
    {"cmd": "die"}                   -> exits at once, without deregistering
End of stdin deregisters and exits.
"""

import asyncio
import json
import os
import sys
import threading


def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def rows(instances):
    return [{"ip": i.ip, "port": i.port, "healthy": i.healthy, "metadata": dict(i.metadata or {})} for i in instances]


async def main(server, name, port, version):
    from v2.nacos import (
        ClientConfigBuilder,
        DeregisterInstanceParam,
        GRPCConfig,
        ListInstanceParam,
        ListServiceParam,
        NacosNamingService,
        RegisterInstanceParam,
        SubscribeServiceParam,
    )

    config = (
        ClientConfigBuilder()
        .server_address(server)
        .log_level("INFO")
        .log_dir(os.environ.get("LOG_DIR", "/tmp"))
        .cache_dir(os.environ.get("CACHE_DIR", "/tmp"))
        .grpc_config(GRPCConfig(grpc_timeout=5000))
        .build()
    )
    naming = await NacosNamingService.create_naming_service(config)
    if port:
        ok = await naming.register_instance(
            RegisterInstanceParam(service_name=name, ip="127.0.0.1", port=port, metadata={"version": version})
        )
        if not ok:
            raise SystemExit("register_instance answered false")
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue = asyncio.Queue()

    def read():
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(commands.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    say(event="ready")

    async def changed(instances):
        say(event="changed", instances=rows(instances))

    while True:
        cmd = await commands.get()
        if cmd is None:
            if port:
                await naming.deregister_instance(DeregisterInstanceParam(service_name=name, ip="127.0.0.1", port=port))
            await naming.shutdown()
            return
        try:
            if cmd["cmd"] == "discover":
                found = await naming.list_instances(
                    ListInstanceParam(service_name=cmd["name"], subscribe=False, healthy_only=None)
                )
                say(event="discover", instances=rows(found))
            elif cmd["cmd"] == "subscribe":
                await naming.subscribe(SubscribeServiceParam(service_name=cmd["name"], subscribe_callback=changed))
                say(event="subscribe")
            elif cmd["cmd"] == "services":
                found = await naming.list_services(ListServiceParam(page_size=100))
                say(event="services", names=list(found.services))
            elif cmd["cmd"] == "close":
                await naming.shutdown()
                os._exit(0)
            elif cmd["cmd"] == "die":
                os._exit(0)
        except Exception as exc:  # reported to the test
            say(event="error", cmd=cmd, error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
