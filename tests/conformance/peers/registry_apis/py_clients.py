"""Drives one real registry client (PyPI py-eureka-client or py-consul) for the conformance tests.

Runs in the venv of scripts/setup.d/37-registry-api-peers.sh, not the project's. Usage:
    py_clients.py eureka|consul SERVER NAME INSTANCE_ID PORT VERSION
registers NAME / INSTANCE_ID at 127.0.0.1:PORT with metadata version=VERSION, keeps it alive as the
client library does, and answers JSON-line commands on stdin with JSON lines on stdout:
    {"cmd": "discover", "name": N}  -> {"event": "discovered", "instances": [{id, address, port, metadata}]}
    {"cmd": "watch", "name": N, "index": I} (consul) -> {"event": "watched", "index": ..., "instances": [...]}
    {"cmd": "die"}                  -> exits at once, without deregistering (its lease then lapses)
End of stdin deregisters (cancel) and exits.
"""

import asyncio
import json
import os
import sys
import threading
import time


def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def eureka(server, name, iid, port, version):
    from py_eureka_client import eureka_client

    client = eureka_client.EurekaClient(
        eureka_server=server, app_name=name, instance_id=iid, instance_host="127.0.0.1",
        instance_ip="127.0.0.1", instance_port=port, renewal_interval_in_secs=1, duration_in_secs=3,
        metadata={"version": version})
    loop = asyncio.new_event_loop()
    loop.run_until_complete(client.start())

    def discover(cmd):
        loop.run_until_complete(client._EurekaClient__pull_full_registry())  # what its timer does on a hash mismatch
        app = client.applications.get_application(cmd["name"].upper())
        return [{"id": i.instanceId, "address": i.ipAddr, "port": i.port.port, "status": i.status,
                 "metadata": i.metadata} for i in app.instances]

    def cached(cmd):
        # what the client knows from its own heartbeat-and-delta cycle, without a fetch of ours
        app = client.applications.get_application(cmd["name"].upper())
        return [{"id": i.instanceId, "address": i.ipAddr, "port": i.port.port, "status": i.status,
                 "metadata": i.metadata} for i in app.instances]

    def stop():
        loop.run_until_complete(client.stop())

    return {"discover": discover, "cached": cached}, stop


def consul(server, name, iid, port, version):
    import consul as consul_lib

    host, _, cport = server.rpartition(":")
    c = consul_lib.Consul(host=host, port=int(cport))
    check = consul_lib.Check.ttl("2s")
    check["DeregisterCriticalServiceAfter"] = "1s"
    c.agent.service.register(name, service_id=iid, address="127.0.0.1", port=port, meta={"version": version},
                             tags=[f"version={version}"], check=check)
    stopping = threading.Event()

    def beat():
        while not stopping.is_set():
            c.agent.check.ttl_pass(f"service:{iid}")
            stopping.wait(0.5)

    threading.Thread(target=beat, daemon=True).start()

    def rows(nodes):
        return [{"id": n["Service"]["ID"], "address": n["Service"]["Address"], "port": n["Service"]["Port"],
                 "metadata": n["Service"]["Meta"], "tags": n["Service"]["Tags"]} for n in nodes]

    def discover(cmd):
        _index, nodes = c.health.service(cmd["name"], passing=True)
        return rows(nodes)

    def watch(cmd):
        index, nodes = c.health.service(cmd["name"], passing=True, index=cmd.get("index"), wait="10s")
        return {"index": index, "instances": rows(nodes)}

    def stop():
        stopping.set()
        c.agent.service.deregister(iid)

    return {"discover": discover, "watch": watch}, stop


def main():
    kind, server, name, iid, port, version = sys.argv[1:7]
    handlers, stop = {"eureka": eureka, "consul": consul}[kind](server, name, iid, int(port), version)
    say(event="ready")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "die":
            os._exit(0)
        try:
            result = handlers[cmd["cmd"]](cmd)
        except Exception as exc:  # report, keep serving: the test decides
            say(event="error", error=f"{type(exc).__name__}: {exc}")
            continue
        if isinstance(result, dict):
            say(event=cmd["cmd"], **result)
        else:
            say(event=cmd["cmd"], instances=result)
    stop()
    say(event="stopped")
    time.sleep(0.1)


if __name__ == "__main__":
    main()
