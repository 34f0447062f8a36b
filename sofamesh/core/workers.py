"""``--workers N``: N processes share each listening port (SO_REUSEPORT); the parent serves the admin
port and aggregates the workers' stats (summed in /stats, labelled ``worker`` in Prometheus). With
xDS the parent holds the one stream and relays every config to the workers (``xds/relay.py``); with
the agent the parent holds the one certificate and sends it to the workers
(``security/secret_relay.py``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from sofamesh.core.admin import HttpMini, prometheus_text
from sofamesh.core.config.model import ProxyConfig, parse_address
from sofamesh.core.net import loop as loop_mod
from sofamesh.core.upgrade import HotUpgrade, SupervisorUpgrade, UpgradeError

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence

    from sofamesh.core.xds.relay import Relay

log = logging.getLogger("sofamesh.workers")

HANDED_OVER = 75  # a worker's exit status once its successor has its listeners and connections
_PR_SET_PDEATHSIG = 1


def _exit_with(parent: int) -> None:
    """In a worker just forked: be sent SIGTERM (a graceful stop) when the supervisor dies, so that no
    worker serves on without one; exit at once if it died before this was set."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:
        os._exit(1)


_SECRETS_TIMEOUT_S = 60.0  # the parent's agent retries Pilot for up to its own start timeout (30 s) first


def _child(config: ProxyConfig, index: int, wfd: int, config_path: str | None, relay_fds: tuple[int, int] | None,
           upgrade: tuple[str, bool] | None = None, secrets_fd: int | None = None) -> None:
    handed_over = False
    from sofamesh.core.errors import MeshError
    from sofamesh.core.gc_policy import settle_after_start
    from sofamesh.core.server import Server

    async def main() -> int:
        secrets = None
        if secrets_fd is not None:  # the certificate before any listener needs it
            from sofamesh.core.net.secrets import PROCESS_SECRETS
            from sofamesh.core.security.secret_relay import receive_secrets

            secrets = await receive_secrets(secrets_fd, PROCESS_SECRETS, _SECRETS_TIMEOUT_S)
        server = Server(config, reuse_port=True, admin_address="127.0.0.1:0", worker=index)
        # each worker re-reads it on SIGHUP; not with xDS, where the relay is the config's only source
        server.config_path = config_path if relay_fds is None else None
        up, inherited, admin_sock = None, None, None
        if upgrade is not None:  # this worker's own upgrade socket: worker i takes over from worker i
            up = HotUpgrade(server, upgrade[0])
            if upgrade[1]:
                inherited, admin_sock = await up.take_over()
            else:
                await up.listen()
        taking_over = up is not None and upgrade is not None and upgrade[1]
        try:
            await server.start(inherited, admin_sock)
        except MeshError as exc:
            if up is not None and taking_over:
                await up.failed(str(exc))
            raise
        if relay_fds is not None:
            from sofamesh.core.xds.relay import follow

            relayed = await follow(server, *relay_fds)
            if up is not None and taking_over and not await relayed.wait_synced(config):
                await up.failed("no complete xDS config relayed in time")
                return 2
        if up is not None and taking_over:
            await up.started()
        settle_after_start()
        assert server.admin is not None
        os.write(wfd, f"{index} {server.admin.port}\n".encode())
        os.close(wfd)
        try:
            cut = await server.serve_until_stopped()
        finally:
            if secrets is not None:
                secrets.cancel()
        nonlocal handed_over
        handed_over = up is not None and up.phase == "handed over"
        return cut

    code = 0
    try:
        loop_mod.run(main())
        code = HANDED_OVER if handed_over else 0
    except Exception:
        log.exception("worker %d failed", index)
        code = 1
    os._exit(code)


async def _get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: w\r\nconnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


def _sum(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, bool) or k in ("worker", "version", "config_version", "p50_ms", "p99_ms", "uptime_s"):
            into.setdefault(k, v)
        elif isinstance(v, int | float):
            into[k] = into.get(k, 0) + v
        elif isinstance(v, dict):
            _sum(into.setdefault(k, {}), v)
        elif isinstance(v, list) and all(isinstance(x, int) for x in v):
            cur = into.setdefault(k, [0] * len(v))
            for i, x in enumerate(v):
                cur[i] += x
        else:
            into.setdefault(k, v)


def supervise(config: ProxyConfig, workers: int, config_path: str | None = None, hot_upgrade: bool = False,
              argv: Sequence[str] = ()) -> int:
    """Fork ``workers`` processes and run the aggregating admin until SIGTERM/SIGINT. SIGHUP is
    passed on to every worker, which reloads ``config_path`` (see ``Server.reload``).

    With ``config.upgrade_socket`` the process can be hot upgraded worker by worker
    (``SupervisorUpgrade``); with ``hot_upgrade`` it takes over from the one running there. SIGUSR2
    or ``POST /hot_upgrade`` starts ``argv`` again with ``--hot-upgrade``. Workers exit when the
    supervisor dies."""
    for lc in config.listeners:
        if parse_address(lc.address)[1] == 0:
            print(f"error: listener {lc.name or lc.address}: --workers needs fixed ports", file=sys.stderr)
            return 2
    sup = SupervisorUpgrade(config.upgrade_socket, workers, argv) if config.upgrade_socket else None
    link, inherited_admin = None, None
    if sup is not None and hot_upgrade:
        sup.phase = "taking over"  # until the old supervisor has exited and this one serves PATH
        try:
            link, inherited_admin = sup.take_over()
        except UpgradeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    rfd, wfd = os.pipe()
    relays = [os.pipe() for _ in range(workers)] if config.xds is not None else []  # (worker's end, ours)
    secret_pipes = [os.pipe() for _ in range(workers)] if config.agent is not None else []
    answers = [os.pipe()[::-1] for _ in relays]  # each worker's answers to the relay: (worker's end, ours)
    pids: list[int] = []
    me = os.getpid()
    for i in range(workers):
        pid = os.fork()
        if pid == 0:
            _exit_with(me)
            os.close(rfd)
            if link is not None:  # the supervisors' connection: the old one must see only ours close
                link.close()
            for pipes in (relays, answers, secret_pipes):
                for j, (theirs, ours) in enumerate(pipes):
                    os.close(ours)
                    if j != i:
                        os.close(theirs)
            _child(config, i, wfd, config_path, (relays[i][0], answers[i][0]) if relays else None,
                   (f"{sup.path}.{i}", hot_upgrade) if sup is not None else None,
                   secret_pipes[i][0] if secret_pipes else None)
        pids.append(pid)
    os.close(wfd)
    for theirs, _ours in (*relays, *answers, *secret_pipes):
        os.close(theirs)
    ports: dict[int, int] = {}
    statuses: dict[int, int] = {}  # pid -> wait status of each worker reaped so far
    sup_tasks: set[asyncio.Task[None]] = set()
    not_started = -1

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def reload_workers() -> None:
            for pid in pids:
                _kill(pid, signal.SIGHUP)

        loop.add_signal_handler(signal.SIGHUP, reload_workers)
        agent, sender = None, None
        if secret_pipes:  # the parent's agent: its certificate goes to every worker
            from sofamesh.core.errors import MeshError
            from sofamesh.core.net.secrets import PROCESS_SECRETS
            from sofamesh.core.security.agent import WorkloadAgent, settings_from_config
            from sofamesh.core.security.secret_relay import SecretSender

            assert config.agent is not None
            try:
                agent = WorkloadAgent(settings_from_config(config.agent, config.xds))
                await agent.start()
            except MeshError as exc:
                print(f"error: {exc}", file=sys.stderr)
                for pid in pids:
                    _kill(pid)
                return 2
            sender = SecretSender(PROCESS_SECRETS, [ours for _theirs, ours in secret_pipes])
            await sender.start()
        if sup is not None:
            loop.add_signal_handler(signal.SIGUSR2, _spawn, sup)
        # the relay first: a worker taking over from another serves only once its config is complete
        relay = await _start_relay(config, [w for _r, w in relays], [r for _w, r in answers]) if relays else None
        ports.update(await loop.run_in_executor(None, _read_ports, rfd, workers))
        if len(ports) < workers:
            print(f"error: only {len(ports)} of {workers} workers started", file=sys.stderr)
            if link is not None:
                why = f"only {len(ports)} of {workers} workers started"
                SupervisorUpgrade.tell(link, {"op": "failed", "error": why})
                link.close()
            if relay is not None:
                await relay.stop()
            for pid in pids:
                _kill(pid)
            if sender is not None:
                await sender.stop()
            if agent is not None:
                await agent.stop()
            return not_started

        async def relayed() -> list[dict[str, Any]]:
            dumps = await asyncio.gather(*(_get(p, "/config_dump") for p in ports.values()), return_exceptions=True)
            return [
                {"worker": i, **json.loads(d).get("xds", {})}
                if isinstance(d, bytes)
                else {"worker": i, "error": str(d)}
                for i, d in zip(ports, dumps, strict=True)
            ]

        async def handle(path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
            results = await asyncio.gather(*(_get(p, "/stats") for p in ports.values()), return_exceptions=True)
            snaps = [json.loads(r) for r in results if isinstance(r, bytes)]
            if path == "/hot_upgrade":
                return _hot_upgrade(sup, query.get("__method__", ["GET"])[0])
            if path == "/ready":
                ok = len(snaps) == len(ports) and all(s["server"]["ready"] for s in snaps)
                if ok and relay is not None:  # every worker on the version the parent last relayed
                    ok = relay.settled and {w.get("relay_version") for w in await relayed()} == {relay.config_version}
                return (200, "text/plain", b"LIVE\n") if ok else (503, "text/plain", b"NOT READY\n")
            if path == "/stats":
                total: dict[str, Any] = {}
                for s in snaps:
                    _sum(total, s)
                total.setdefault("server", {})["workers"] = len(snaps)
                return 200, "application/json", json.dumps({"total": total, "workers": snaps}, indent=2).encode()
            if path == "/stats/prometheus":
                return 200, "text/plain; version=0.0.4", prometheus_text(snaps).encode()
            if path == "/config_dump" and relay is not None:
                dump = json.loads(await _get(next(iter(ports.values())), path))
                dump["xds"] = relay.describe()
                dump["workers"] = await relayed()  # each worker's relay version and xDS versions
                return 200, "application/json", json.dumps(dump, indent=2).encode()
            if path in ("/config_dump", "/clusters", "/plugins", "/certs"):
                return 200, "application/json", await _get(next(iter(ports.values())), path)
            return 404, "text/plain", b"unknown admin path\n"

        admin = None
        if config.admin is not None:
            admin = HttpMini(config.admin.address, handle)
            await admin.start(inherited_admin)
        if sup is not None:
            sup.on_ready = admin.stop if admin is not None else None
            if link is not None:
                SupervisorUpgrade.tell(link, {"op": "ready"})
                log.info("hot upgrade: %d worker(s) took over from supervisor pid %d", workers, sup.peer_pid)
                sup_tasks.add(loop.create_task(_serve_after(sup, link, admin)))
            else:
                await sup.listen(admin)
        waiter: asyncio.Future[Any] = loop.run_in_executor(None, _wait_any, statuses)
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        while True:
            await asyncio.wait([stopper, waiter], return_when=asyncio.FIRST_COMPLETED)
            if stopper.done():
                break
            pid = waiter.result()
            if sup is not None and pid in sup.spawned:  # a successor we started that exited
                sup.reaped(pid, statuses.pop(pid))
            elif pid in pids and os.waitstatus_to_exitcode(statuses[pid]) == HANDED_OVER:
                # its successor has its connections; serve on with the others if the upgrade stops there
                ports.pop(pids.index(pid), None)
                if sup is not None:
                    sup.handed_over += 1
                if all(p in statuses for p in pids):
                    break
            else:  # a worker that stopped or crashed by itself stops them all
                break
            waiter = loop.run_in_executor(None, _wait_any, statuses)
        handed = [p for p in pids if os.waitstatus_to_exitcode(statuses.get(p, 0)) == HANDED_OVER]
        if sup is not None and sup.upgrading and len(handed) == len(pids):
            print(f"sofamesh: handed over to supervisor pid {sup.peer_pid}: {workers} worker(s)", file=sys.stderr)
        if relay is not None:
            await relay.stop()
        for pid in pids:
            _kill(pid, signal.SIGTERM)
        if admin is not None:
            await admin.stop()
        if sender is not None:
            await sender.stop()
        if agent is not None:
            await agent.stop()
        return 0

    code = loop_mod.run(main())  # returns once the executor's os.wait() has reaped a worker too
    if code == not_started:
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        return 1
    for pid in pids:
        if pid not in statuses:
            try:
                statuses[pid] = os.waitpid(pid, 0)[1]
            except ChildProcessError:
                pass
    for index, pid in enumerate(pids):  # a worker that crashed, even while stopping, fails the whole
        worker_code = os.waitstatus_to_exitcode(statuses.get(pid, 0))
        if worker_code not in (0, HANDED_OVER):
            print(f"error: worker {index} (pid {pid}) exited with {worker_code}", file=sys.stderr)
            code = code or 1
    return code


def _read_ports(rfd: int, workers: int) -> dict[int, int]:
    """Each worker's admin port, as it reports once it serves (fewer when some failed to start)."""
    ports: dict[int, int] = {}
    with os.fdopen(rfd) as r:
        for line in r:
            idx, port = line.split()
            ports[int(idx)] = int(port)
            if len(ports) == workers:
                break
    return ports


async def _serve_after(sup: SupervisorUpgrade, link: socket.socket, admin: HttpMini | None) -> None:
    """Once the old supervisor has exited (our link to it closes), serve the upgrade socket."""
    loop = asyncio.get_running_loop()
    link.setblocking(False)
    try:
        while await loop.sock_recv(link, 1 << 12):
            pass
    except OSError:
        pass
    link.close()
    sup.phase = "serving"
    try:
        await sup.listen(admin, replace=True)
    except UpgradeError as exc:  # the process serves on; only its next upgrade is impossible
        log.error("hot upgrade: %s; this process cannot be upgraded in place", exc)


async def _start_relay(config: ProxyConfig, pipes: list[int], answers: list[int]) -> Relay:
    """The parent's xDS client, feeding a relay to the workers' pipes."""
    from sofamesh.core.build import proxy_host
    from sofamesh.core.xds.client import XdsClient
    from sofamesh.core.xds.relay import Relay

    assert config.xds is not None
    protocols = proxy_host().available()
    relay = Relay(config, protocols, pipes, answers)
    await relay.open()
    relay.client = XdsClient(relay, config, config.xds, protocols)
    relay.client.start()
    return relay


def _hot_upgrade(sup: SupervisorUpgrade | None, method: str) -> tuple[int, str, bytes]:
    """GET /hot_upgrade: the supervisor's upgrade phase; POST: start its successor (409 during one)."""
    if sup is None:
        if method == "POST":
            return 400, "text/plain", b"refused: no upgrade socket (--upgrade-socket / upgrade_socket:)\n"
        return 200, "application/json", json.dumps({"phase": "off", "pid": os.getpid()}).encode()
    if method == "POST":
        try:
            pid = sup.spawn()
        except (UpgradeError, OSError) as exc:
            return 409, "text/plain", f"refused: {exc}\n".encode()
        return 200, "application/json", json.dumps({"started": pid, **sup.describe()}).encode()
    return 200, "application/json", json.dumps(sup.describe()).encode()


def _spawn(sup: SupervisorUpgrade) -> None:
    """SIGUSR2: start this supervisor's command again with --hot-upgrade."""
    try:
        sup.spawn()
    except (UpgradeError, OSError) as exc:
        log.error("SIGUSR2: %s", exc)


def _wait_any(statuses: dict[int, int]) -> int:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        return 0
    statuses[pid] = status
    return pid


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


__all__ = ["supervise"]
