"""Hot upgrade, as MOSN does it: a new process takes over the listening sockets, then the live
downstream connections, over a Unix socket (descriptors passed with SCM_RIGHTS).

The running process owns the upgrade socket (``upgrade_socket:`` or ``--upgrade-socket``). A new
process started with ``--hot-upgrade`` connects to it, and the two exchange length-prefixed JSON
messages; descriptors ride on the message that names them::

    new -> old   hello    {pid}
    old -> new   sockets  {pid, listeners: [{name, address}], admin}  + each listening socket (+ admin's)
                 refused  {pid, reason}                               (an upgrade is already running)
    new -> old   ready    {listeners: [names it accepts on]}          | failed {error}
    old          stops accepting; each connection that can move goes at its next message boundary:
    old -> new   conn     {listener, protocol, state, unread}         + the connection's socket
    old -> new   done     {moved, drained, cut, stats}
    the old process exits; the new one opens the upgrade socket for the next upgrade.

What cannot move (TLS, ``tcp`` passthrough, a codec without ``export_state`` such as HTTP/2) drains
in the old process: idle connections close, busy ones after their streams; whatever is left after
``drain_timeout_ms`` is cut. Upstream connections never move. A new process that fails before
``ready``, or goes away during the hand-over, leaves the old one accepting again.

Nothing on the request path imports this module; it sits beside ``Server`` and drives it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sofamesh.core.codec import CodecState
from sofamesh.core.errors import MeshError
from sofamesh.core.proxy.stream_manager import DownstreamConnection
from sofamesh.core.stats import Histogram, RpcStats

if TYPE_CHECKING:
    from sofamesh.core.server import Server

log = logging.getLogger("sofamesh.upgrade")

_LEN = struct.Struct("!I")
_MAX_FDS = 253  # SCM_MAX_FD on Linux: what one message may carry
_POLL = 0.005  # how often the old process looks for connections that reached a message boundary
_HELLO_TIMEOUT = 10.0
_READY_TIMEOUT = 60.0  # the new process builds its config and binds what it does not inherit


class UpgradeError(MeshError):
    """A hot upgrade that could not happen; the message says why and which process keeps serving."""


@dataclass
class UpgradeReport:
    """What one hand-over moved, as both processes report it."""

    peer_pid: int = 0
    listeners: int = 0
    moved: int = 0
    drained: int = 0
    cut: int = 0
    takeover_ms: float = 0.0  # the old process's hello -> ready: the new one built its config and accepts
    handover_ms: float = 0.0  # ready -> done: every connection moved, drained or cut

    def line(self) -> str:
        return (f"{self.listeners} listener(s), {self.moved} connection(s) moved, {self.drained} drained, "
                f"{self.cut} cut")


class _Channel:
    """Length-prefixed JSON messages over a connected Unix stream socket. Descriptors travel with the
    message that counts them (``nfds``): the kernel delivers them with its first byte, so they are
    handed out in arrival order when the message is complete."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self._buf = bytearray()
        self._fds: deque[int] = deque()

    async def send(self, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = json.dumps({**msg, "nfds": len(fds)}).encode()
        view = memoryview(_LEN.pack(len(data)) + data)
        pending = list(fds)
        while view:
            try:
                n = socket.send_fds(self.sock, [view], pending) if pending else self.sock.send(view)
            except BlockingIOError:
                await self._wait(write=True)
                continue
            pending = []
            view = view[n:]

    async def recv(self) -> tuple[dict[str, Any], list[int]]:
        """The next message and its descriptors; ``EOFError`` when the peer closed."""
        while True:
            buf = self._buf
            if len(buf) >= _LEN.size:
                (n,) = _LEN.unpack_from(buf)
                if len(buf) >= _LEN.size + n:
                    msg = json.loads(bytes(buf[_LEN.size:_LEN.size + n]))
                    del buf[:_LEN.size + n]
                    k = int(msg.get("nfds", 0))
                    if len(self._fds) < k:
                        raise UpgradeError(f"hot upgrade: message {msg.get('op')!r} came without its descriptors")
                    return msg, [self._fds.popleft() for _ in range(k)]
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, 1 << 16, _MAX_FDS)
            except BlockingIOError:
                await self._wait(write=False)
                continue
            self._fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise UpgradeError("hot upgrade: descriptors were truncated in transit")
            if not data:
                raise EOFError("the other process closed the upgrade connection")
            buf += data

    def peer_gone(self) -> bool:
        """Whether the peer closed its end (checked without consuming anything)."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    async def _wait(self, write: bool) -> None:
        fut = self.loop.create_future()
        fd = self.sock.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        if write:
            self.loop.add_writer(fd, ready)
        else:
            self.loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            if write:
                self.loop.remove_writer(fd)
            else:
                self.loop.remove_reader(fd)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popleft())
        self.sock.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _between_requests(conn: DownstreamConnection) -> bool:
    """Whether reading can stop without leaving a request half read: framed RPC codecs always (a
    partial frame moves as unread bytes); HTTP/1 once the current request is read whole (the parser
    cannot hand over half a request, so a connection paused mid-request would never move)."""
    if conn.multiplexed:
        return True
    active = conn.active
    return active is not None and active.request_done


class HotUpgrade:
    """A process's side of hot upgrades: the upgrade socket it serves (old side: ``listen`` and the
    hand-over) and the take-over it started with (new side: ``take_over``, ``started``, ``failed``)."""

    def __init__(self, server: Server, path: str, argv: Sequence[str] = ()) -> None:
        self.server = server
        self.path = path
        self.argv = list(argv)  # how this process was started (``spawn`` starts the same plus --hot-upgrade)
        self.phase = "serving"  # serving | starting (spawned a successor) | taking over | handing over | handed over
        self.report = UpgradeReport()
        self._listening: socket.socket | None = None
        self._channel: _Channel | None = None
        self._inherited: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawned: list[int] = []
        self._paused: list[DownstreamConnection] = []  # connections that stopped reading for the hand-over
        server.hot_upgrade = self

    def describe(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "phase": self.phase, "socket": self.path, **asdict(self.report)}

    def _task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the old side ------------------------------------------------------------------------------
    async def listen(self, *, replace: bool = False) -> None:
        """Serve the upgrade socket. A path left by a process that is gone is reused; a path another
        process still serves is an ``UpgradeError`` (unless ``replace``: it handed over to us)."""
        loop = asyncio.get_running_loop()
        sock = await _bind_upgrade_socket(self.path, replace)
        self._listening = sock
        self._task(self._accept(sock, loop))

    async def _accept(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:
                return  # the socket was closed: the hand-over is done
            ch = _Channel(conn, loop)
            if self.phase not in ("serving", "starting") or not self.server.ready:
                why = (f"an upgrade to pid {self.report.peer_pid} is in progress" if self.server.ready
                       else "this process is not serving yet")
                self._task(self._refuse(ch, why))
            else:
                self.phase = "handing over"
                self._task(self._hand_over(ch))

    async def _refuse(self, ch: _Channel, reason: str) -> None:
        try:
            await asyncio.wait_for(ch.send({"op": "refused", "pid": os.getpid(), "reason": reason}), 5)
        except (OSError, TimeoutError):
            pass
        finally:
            ch.close()

    def spawn(self) -> int:
        """Start this process's command again with ``--hot-upgrade`` (SIGUSR2, ``POST /hot_upgrade``):
        the new process takes over from this one. Returns its pid."""
        if self.phase != "serving":
            raise UpgradeError(f"an upgrade is already in progress (phase: {self.phase})")
        pid = spawn_successor(self.argv)
        self._spawned.append(pid)
        self.phase = "starting"
        if self.server.loop is not None:
            self.server.loop.call_later(1.0, self._reap)
        log.info("hot upgrade: started pid %d to take over", pid)
        return pid

    def _reap(self) -> None:
        """Collect spawned processes that exited (one whose config was refused) so none is a zombie."""
        for pid in list(self._spawned):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self._spawned.remove(pid)
                if self.phase == "starting":
                    self.phase = "serving"
                if status:
                    log.error("hot upgrade: pid %d exited with status %d; this process keeps serving", pid,
                              os.waitstatus_to_exitcode(status))
        if self._spawned and self.server.loop is not None:
            self.server.loop.call_later(1.0, self._reap)

    async def _hand_over(self, ch: _Channel) -> None:
        server = self.server
        spare_admin: socket.socket | None = None
        try:
            hello, _ = await asyncio.wait_for(ch.recv(), _HELLO_TIMEOUT)
            t_hello = time.monotonic()
            self.report = UpgradeReport(peer_pid=int(hello.get("pid", 0)))
            names, fds = [], []
            for name, h in server.listeners.items():
                if h.listener is not None:
                    names.append({"name": name, "address": h.config.address})
                    fds.append(h.listener.socket.fileno())
            admin_sock = server.admin.http.socket if server.admin is not None else None
            if admin_sock is not None:
                fds.append(admin_sock.fileno())
            await ch.send({"op": "sockets", "pid": os.getpid(), "listeners": names,
                           "admin": server.admin_address if admin_sock is not None else None}, fds)
            log.info("hot upgrade: pid %d connected; %d listening socket(s) sent", self.report.peer_pid, len(fds))
            msg, _ = await asyncio.wait_for(ch.recv(), _READY_TIMEOUT)
            if msg.get("op") != "ready":
                raise UpgradeError(str(msg.get("error") or f"unexpected message {msg.get('op')!r}"))
        except (EOFError, OSError, TimeoutError, ValueError, UpgradeError) as exc:
            log.error("hot upgrade: pid %d did not take over (%s); this process keeps serving",
                      self.report.peer_pid, exc or type(exc).__name__)
            ch.close()
            self.phase = "serving"
            return
        t_ready = time.monotonic()
        self.report.takeover_ms = round((t_ready - t_hello) * 1000, 3)
        served = set(msg.get("listeners", []))
        self.report.listeners = len(served)
        # The new process accepts on every socket now: stop accepting here, keeping each socket open
        # until the hand-over is over (the new process may yet go away).
        for h in server.listeners.values():
            if h.listener is not None:
                h.listener.pause_accepting()
        if server.admin is not None and server.admin.http.socket is not None:
            spare_admin = socket.socket(fileno=os.dup(server.admin.http.socket.fileno()))
            await server.admin.stop()
        log.info("hot upgrade: pid %d accepts on %d listener(s); this process stopped accepting",
                 self.report.peer_pid, len(served))
        try:
            await self._move_connections(ch, served)
            self._paused = []
            if self._listening is not None:  # a later upgrade connects to the new process
                self._listening.close()
                self._listening = None
            self.report.handover_ms = round((time.monotonic() - t_ready) * 1000, 3)
            await ch.send({"op": "done", "moved": self.report.moved, "drained": self.report.drained,
                           "cut": self.report.cut, "takeover_ms": self.report.takeover_ms,
                           "handover_ms": self.report.handover_ms, "stats": self._counters()})
        except (OSError, UpgradeError) as exc:
            log.error("hot upgrade: pid %d went away during the hand-over (%s); this process accepts again "
                      "(%d connection(s) had moved)", self.report.peer_pid, exc, self.report.moved)
            ch.close()
            self.phase = "serving"
            await self._resume(spare_admin)
            return
        ch.close()
        if spare_admin is not None:
            spare_admin.close()
        for h in server.listeners.values():
            if h.listener is not None:
                h.listener.close_socket()
        self.phase = "handed over"
        log.info("hot upgrade: handed over to pid %d: %s", self.report.peer_pid, self.report.line())
        server.request_stop()

    async def _resume(self, spare_admin: socket.socket | None) -> None:
        server = self.server
        assert server.loop is not None
        paused, self._paused = self._paused, []
        for conn in paused:
            if not conn.closed and conn.read_gate is not None:
                conn.read_gate.resume(self)
        for h in server.listeners.values():
            if h.listener is not None:
                await h.listener.start(server.loop)
        if spare_admin is not None and server.admin is not None:
            await server.admin.start(spare_admin)

    async def _move_connections(self, ch: _Channel, served: set[str]) -> None:
        """Hand each connection over at its next message boundary; drain what cannot move; cut what
        is left at the drain timeout."""
        server = self.server
        assert server.loop is not None
        loop = server.loop
        deadline = loop.time() + server.config.drain_timeout_ms / 1000.0
        draining: set[int] = set()  # cannot move: told to drain here
        paused: set[int] = set()  # will move: reading stopped until it is handed over
        while True:
            left: list[DownstreamConnection] = []
            for name, h in server.listeners.items():
                for rt in (h.rt, *h.old):
                    for conn in list(rt.connections):
                        if not isinstance(conn, DownstreamConnection) or conn.closed:
                            continue
                        if name in served and conn.movable():
                            if conn.read_gate is not None and id(conn) not in paused and _between_requests(conn):
                                # Read nothing more here: what is in flight finishes and is answered,
                                # and the next requests wait in the socket for the new process. (A
                                # client under load never leaves a gap long enough by itself.)
                                paused.add(id(conn))
                                conn.read_gate.pause(self)
                                self._paused.append(conn)
                            st = conn.handover_state()
                            if st is not None:
                                await self._send_connection(ch, name, conn, *st)
                                continue
                        elif id(conn) not in draining:
                            self.report.drained += 1
                            draining.add(id(conn))
                            conn.drain()
                        left.append(conn)
            if not left:
                return
            if loop.time() >= deadline:
                for conn in left:
                    if not conn.closed:
                        self.report.cut += 1
                        self.report.drained -= id(conn) in draining
                        conn.abort()
                log.warning("hot upgrade: %d connection(s) cut after the %d ms drain timeout", self.report.cut,
                            server.config.drain_timeout_ms)
                return
            if ch.peer_gone():
                raise UpgradeError("the new process closed the upgrade connection")
            await asyncio.sleep(_POLL)

    async def _send_connection(self, ch: _Channel, listener: str, conn: DownstreamConnection, protocol: str,
                               st: CodecState) -> None:
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        fd = os.dup(sock.fileno())
        conn.abort()  # this process lets go; the duplicate keeps the connection open for the new one
        try:
            await ch.send({"op": "conn", "listener": listener, "protocol": protocol, "state": _b64(st.state),
                           "unread": _b64(st.unread)}, [fd])
        finally:
            os.close(fd)
        self.report.moved += 1

    def _counters(self) -> dict[str, Any]:
        """The totals the new process continues from, as Envoy's hot restart keeps its stats (there
        in shared memory, here on the upgrade socket): each listener's and cluster's counters and
        latency buckets, and the RPC counters. Gauges (``*_active``) are not carried."""
        server = self.server
        listeners: dict[str, Any] = {}
        rpc: dict[str, list[Any]] = {}
        for name, h in server.listeners.items():
            st = h.rt.stats
            listeners[name] = {"counters": _totals(st.snapshot()), "latency": _histogram(st.latency)}
            rpc[name] = [[*key, {"requests": r.requests, "timeouts": r.timeouts,
                                 "statuses": {str(k): v for k, v in r.statuses.items()},
                                 "latency": _histogram(r.latency)}] for key, r in h.rt.rpc_stats.items()]
        clusters = {name: {"counters": _totals(c.stats.snapshot()), "upstream_rq_time": list(c.stats.upstream_rq_time)}
                    for name, c in server.clusters.items()}
        return {"listeners": listeners, "clusters": clusters, "rpc": rpc}

    # -- the new side ------------------------------------------------------------------------------
    async def take_over(self) -> tuple[dict[str, tuple[str, socket.socket]], socket.socket | None]:
        """Connect to the process serving the upgrade socket and receive its listening sockets:
        (listener name -> (address, socket), the admin socket). ``UpgradeError`` when there is no
        such process or it refuses (an upgrade already running)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise UpgradeError(f"--hot-upgrade: no process serves the upgrade socket {self.path} "
                               f"({exc.strerror or exc})") from None
        ch = _Channel(sock, loop)
        try:
            await ch.send({"op": "hello", "pid": os.getpid()})
            msg, fds = await asyncio.wait_for(ch.recv(), _HELLO_TIMEOUT)
        except (EOFError, OSError, TimeoutError, ValueError) as exc:
            ch.close()
            raise UpgradeError(f"--hot-upgrade: the process on {self.path} did not answer ({exc})") from None
        if msg.get("op") != "sockets":
            ch.close()
            raise UpgradeError(f"--hot-upgrade: pid {msg.get('pid')} refused: {msg.get('reason', msg.get('op'))}")
        self._channel = ch
        self.phase = "taking over"
        self.report = UpgradeReport(peer_pid=int(msg["pid"]))
        socks = [socket.socket(fileno=fd) for fd in fds]
        listeners = msg.get("listeners", [])
        inherited = {row["name"]: (row["address"], s) for row, s in zip(listeners, socks, strict=False)}
        admin = socks[len(listeners)] if msg.get("admin") and len(socks) > len(listeners) else None
        if admin is not None and msg["admin"] != self.server.admin_address:
            admin.close()
            admin = None
        self._inherited = list(inherited)
        return inherited, admin

    async def started(self) -> None:
        """This process accepts on every listener: tell the old one, and take its connections."""
        ch = self._channel
        assert ch is not None
        served = [n for n, h in self.server.listeners.items()
                  if h.listener is not None and n in self._inherited]
        self.report.listeners = len(served)
        try:
            await self.server.release()  # accept only now: the config (xDS included) is complete
            await ch.send({"op": "ready", "listeners": served})
        except OSError as exc:
            log.warning("hot upgrade: pid %d went away before the hand-over (%s)", self.report.peer_pid, exc)
            ch.close()
            await self._after_take_over()
            return
        log.info("hot upgrade: accepting on %d listener(s) taken from pid %d", len(served), self.report.peer_pid)
        self._task(self._receive(ch))

    async def failed(self, error: str) -> None:
        """This process could not start: the old one keeps serving."""
        ch = self._channel
        if ch is None:
            return
        try:
            await asyncio.wait_for(ch.send({"op": "failed", "error": error}), 5)
        except (OSError, TimeoutError):
            pass
        ch.close()
        self._channel = None

    async def _receive(self, ch: _Channel) -> None:
        try:
            while True:
                msg, fds = await ch.recv()
                op = msg.get("op")
                if op == "conn":
                    await self._adopt(msg, fds[0])
                elif op == "done":
                    self.report.drained = int(msg.get("drained", 0))
                    self.report.takeover_ms = float(msg.get("takeover_ms", 0.0))
                    self.report.handover_ms = float(msg.get("handover_ms", 0.0))
                    self.report.cut = int(msg.get("cut", 0))
                    self._carry(msg.get("stats", {}))
                    break
                else:
                    for fd in fds:
                        os.close(fd)
        except (EOFError, OSError, ValueError, UpgradeError) as exc:
            log.warning("hot upgrade: pid %d went away before it was done (%s)", self.report.peer_pid, exc)
        finally:
            ch.close()
            self._channel = None
        log.info("hot upgrade: took over from pid %d: %s", self.report.peer_pid, self.report.line())
        await self._after_take_over()

    async def _after_take_over(self) -> None:
        self.phase = "serving"
        try:
            await self.listen(replace=True)
        except UpgradeError as exc:
            log.error("hot upgrade: %s; this process cannot be upgraded in place", exc)

    async def _adopt(self, msg: dict[str, Any], fd: int) -> None:
        sock = socket.socket(fileno=fd)
        h = self.server.listeners.get(str(msg.get("listener")))
        protocol = str(msg.get("protocol") or "")
        factory = None
        if h is not None and protocol:
            factory = next((f for f in h.rt.factories if f.name == protocol), None)
        if h is None or (protocol and factory is None):
            log.warning("hot upgrade: a %s connection of listener %r has nowhere to go here; closing it",
                        protocol or "new", msg.get("listener"))
            sock.close()
            self.report.cut += 1
            return
        conn = DownstreamConnection(h.rt, self.server.loop)  # type: ignore[arg-type]
        conn.resume(factory, CodecState(base64.b64decode(msg.get("state", "")),
                                        base64.b64decode(msg.get("unread", ""))))
        sock.setblocking(False)
        await self.server.loop.connect_accepted_socket(lambda: conn, sock)  # type: ignore[union-attr]
        self.report.moved += 1

    def _carry(self, stats: dict[str, Any]) -> None:
        """Continue the old process's totals (a moved connection was counted there, once). A listener
        or cluster the new config no longer has is left out."""
        server = self.server
        for name, got in stats.get("listeners", {}).items():
            h = server.listeners.get(name)
            if h is not None:
                _add_counters(h.rt.stats, got.get("counters", {}))
                _add_histogram(h.rt.stats.latency, got.get("latency"))
        for name, got in stats.get("clusters", {}).items():
            c = server.clusters.get(name)
            if c is not None:
                _add_counters(c.stats, got.get("counters", {}))
                _add_buckets(c.stats.upstream_rq_time, got.get("upstream_rq_time"))
        for name, rows in stats.get("rpc", {}).items():
            h = server.listeners.get(name)
            if h is None:
                continue
            for proto, svc, method, got in rows:
                r = h.rt.rpc_stats.get((proto, svc, method))
                if r is None:
                    r = h.rt.rpc_stats[(proto, svc, method)] = RpcStats()
                r.requests += int(got.get("requests", 0))
                r.timeouts += int(got.get("timeouts", 0))
                for code, n in got.get("statuses", {}).items():
                    r.statuses[int(code)] = r.statuses.get(int(code), 0) + int(n)
                _add_histogram(r.latency, got.get("latency"))


def spawn_successor(argv: Sequence[str]) -> int:
    """Start ``sofamesh ARGV --hot-upgrade`` (this process's command line): the new process takes over
    from this one. Returns its pid."""
    args = [a for a in argv if a != "--hot-upgrade"]
    return os.posix_spawn(sys.executable, [sys.executable, "-m", "sofamesh", *args, "--hot-upgrade"], os.environ)


class SupervisorUpgrade:
    """``--workers N``: the supervisors' side of a hot upgrade. Workers are replaced worker by worker:
    worker ``i`` of the new process takes over from worker ``i`` of the old one, each pair over its
    own upgrade socket (``PATH.i``) exactly as a single process does (listening sockets, then
    connections; each worker's SO_REUSEPORT socket moves with its backlog). The supervisors meet on
    ``PATH`` first::

        new -> old   hello    {pid, workers}
        old -> new   sockets  {pid, workers, admin}  + the admin socket   | refused {pid, reason}
        the new supervisor forks its workers; each takes over from its peer
        new -> old   ready    {}                                          | failed {error}
        the old supervisor stops its admin and exits once its last worker has handed over.

    A new supervisor that goes away before its last worker took over (its workers exit with it:
    ``PR_SET_PDEATHSIG``) leaves the old one serving with the workers it still has.
    """

    def __init__(self, path: str, workers: int, argv: Sequence[str] = ()) -> None:
        self.path = path
        self.workers = workers
        self.argv = list(argv)  # how this supervisor was started (``spawn`` starts the same plus --hot-upgrade)
        # serving | starting (spawned a successor) | handing over | handed over | taking over (the new one)
        self.phase = "serving"
        self.peer_pid = 0
        self.handed_over = 0  # workers that exited having handed over (set by the supervisor)
        self.spawned: list[int] = []
        self.on_ready: Any = None  # called (a coroutine function) when the new supervisor's workers serve
        self._listening: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def upgrading(self) -> bool:
        """Whether a new supervisor's workers are taking over from ours."""
        return self.phase in ("handing over", "handed over")

    def describe(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "phase": self.phase, "socket": self.path, "workers": self.workers,
                "peer_pid": self.peer_pid}

    def spawn(self) -> int:
        """Start this supervisor's command again with ``--hot-upgrade`` (SIGUSR2, ``POST /hot_upgrade``).
        Returns its pid; ``UpgradeError`` while an upgrade is in progress."""
        if self.phase != "serving":
            raise UpgradeError(f"an upgrade is already in progress (phase: {self.phase})")
        if self.handed_over:
            raise UpgradeError(f"{self.handed_over} of its {self.workers} workers handed over to a supervisor "
                               "that died; restart it instead")
        pid = spawn_successor(self.argv)
        self.spawned.append(pid)
        self.phase = "starting"
        log.info("hot upgrade: started supervisor pid %d to take over", pid)
        return pid

    def reaped(self, pid: int, status: int) -> None:
        """A successor this supervisor started exited (it failed, or handed over in turn)."""
        self.spawned.remove(pid)
        if self.phase == "starting":
            self.phase = "serving"
        if status:
            log.error("hot upgrade: pid %d exited with status %d; this process keeps serving", pid,
                      os.waitstatus_to_exitcode(status))

    # -- the old side ------------------------------------------------------------------------------
    async def listen(self, admin: Any, *, replace: bool = False) -> None:
        """Serve ``PATH`` (``admin``: the ``HttpMini`` whose socket moves, or ``None``)."""
        self._listening = await _bind_upgrade_socket(self.path, replace)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._accept(self._listening, loop, admin))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, admin: Any) -> None:
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:
                return
            ch = _Channel(conn, loop)
            try:
                hello, _ = await asyncio.wait_for(ch.recv(), _HELLO_TIMEOUT)
                if self.phase not in ("serving", "starting"):
                    reason = f"an upgrade to pid {self.peer_pid} is in progress"
                elif self.handed_over:
                    reason = (f"{self.handed_over} of its {self.workers} workers handed over to a supervisor "
                              "that died; restart it instead")
                elif int(hello.get("workers", 0)) != self.workers:
                    reason = (f"--workers {hello.get('workers')} differs from the running process's "
                              f"--workers {self.workers}: worker i takes over from worker i")
                else:
                    reason = ""
                if reason:
                    await ch.send({"op": "refused", "pid": os.getpid(), "reason": reason})
                    ch.close()
                    continue
                self.phase = "handing over"
                self.peer_pid = int(hello.get("pid", 0))
                admin_sock = admin.socket if admin is not None else None
                await ch.send({"op": "sockets", "pid": os.getpid(), "workers": self.workers,
                               "admin": admin.address if admin_sock is not None else None},
                              [admin_sock.fileno()] if admin_sock is not None else [])
                log.info("hot upgrade: supervisor pid %d connected; its workers take over from ours",
                         self.peer_pid)
                msg, _ = await asyncio.wait_for(ch.recv(), _READY_TIMEOUT)
                if msg.get("op") != "ready":
                    raise UpgradeError(str(msg.get("error") or f"unexpected message {msg.get('op')!r}"))
            except (EOFError, OSError, TimeoutError, ValueError, UpgradeError) as exc:
                if self.phase == "handing over":
                    log.error("hot upgrade: supervisor pid %d did not take over (%s); the workers it did "
                              "not replace keep serving", self.peer_pid, exc or type(exc).__name__)
                    self.phase = "serving"
                ch.close()
                continue
            self.phase = "handed over"
            sock.close()
            spare = socket.socket(fileno=os.dup(admin_sock.fileno())) if admin_sock is not None else None
            if self.on_ready is not None:
                await self.on_ready()
            log.info("hot upgrade: supervisor pid %d serves; this one exits with its last worker", self.peer_pid)
            # The link stays open until this process exits (the new supervisor then serves PATH); if
            # it closes first, the new supervisor died (its workers with it): serve again with the
            # workers that have not handed over yet (each resumes what it had not moved).
            try:
                await ch.recv()
            except (EOFError, OSError, ValueError, UpgradeError):
                pass
            ch.close()
            log.error("hot upgrade: supervisor pid %d went away before the last of our workers handed over; "
                      "this one serves again with the workers it has", self.peer_pid)
            self.phase = "serving"
            if spare is not None and admin is not None:
                await admin.start(spare)
            try:
                sock = self._listening = await _bind_upgrade_socket(self.path, True)
            except UpgradeError as exc:  # it serves on; only its next upgrade is impossible
                log.error("hot upgrade: %s; this process cannot be upgraded in place", exc)
                return

    # -- the new side ------------------------------------------------------------------------------
    def take_over(self) -> tuple[socket.socket, socket.socket | None]:
        """Before forking: connect to the running supervisor and receive its admin socket. Returns
        (the connection, kept until ``ready``; the admin socket or ``None``). Blocking."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_HELLO_TIMEOUT)
        try:
            sock.connect(self.path)
            _send_blocking(sock, {"op": "hello", "pid": os.getpid(), "workers": self.workers})
            msg, fds = _recv_blocking(sock)
        except (OSError, EOFError, ValueError) as exc:
            sock.close()
            raise UpgradeError(f"--hot-upgrade: no supervisor answers on the upgrade socket {self.path} "
                               f"({exc})") from None
        if msg.get("op") != "sockets":
            sock.close()
            for fd in fds:
                os.close(fd)
            raise UpgradeError(f"--hot-upgrade: pid {msg.get('pid')} refused: {msg.get('reason', msg.get('op'))}")
        self.peer_pid = int(msg["pid"])
        admin = socket.socket(fileno=fds[0]) if fds else None
        return sock, admin

    @staticmethod
    def tell(link: socket.socket, msg: dict[str, Any]) -> None:
        """``ready`` or ``failed`` to the old supervisor (blocking; it is waiting for it)."""
        try:
            _send_blocking(link, msg)
        except OSError:
            pass


async def _bind_upgrade_socket(path: str, replace: bool) -> socket.socket:
    """A listening Unix socket at ``path``; a path another process still serves is an
    ``UpgradeError`` (unless ``replace``: it handed over to us)."""
    if os.path.exists(path) and not replace:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            pass  # nobody listens: a stale path
        else:
            raise UpgradeError(f"upgrade socket {path}: another process serves it; start this one with "
                               "--hot-upgrade to take over from it")
        finally:
            probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(4)
    except OSError as exc:
        sock.close()
        raise UpgradeError(f"upgrade socket {path}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _send_blocking(sock: socket.socket, msg: dict[str, Any]) -> None:
    data = json.dumps({**msg, "nfds": 0}).encode()
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_blocking(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    buf = bytearray()
    fds: list[int] = []
    while True:
        if len(buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) >= _LEN.size + n:
                return json.loads(bytes(buf[_LEN.size:_LEN.size + n])), fds
        data, got, _flags, _ = socket.recv_fds(sock, 1 << 16, _MAX_FDS)
        fds.extend(got)
        if not data:
            raise EOFError("the other supervisor closed the upgrade connection")
        buf += data


def _totals(snapshot: dict[str, object]) -> dict[str, int]:
    return {k: v for k, v in snapshot.items() if type(v) is int and not k.endswith("_active")}


def _histogram(h: Histogram) -> dict[str, Any]:
    return {"buckets": list(h.buckets), "count": h.count, "sum": h.sum}


def _add_counters(into: object, counters: dict[str, Any]) -> None:
    for k, v in counters.items():
        if type(v) is int and not k.endswith("_active") and hasattr(into, k):
            setattr(into, k, getattr(into, k) + v)


def _add_buckets(into: list[int], buckets: Any) -> None:
    if isinstance(buckets, list) and len(buckets) == len(into):  # same bucket bounds on both sides
        for i, n in enumerate(buckets):
            into[i] += int(n)


def _add_histogram(into: Histogram, got: Any) -> None:
    if isinstance(got, dict) and isinstance(got.get("buckets"), list) and len(got["buckets"]) == len(into.buckets):
        _add_buckets(into.buckets, got["buckets"])
        into.count += int(got.get("count", 0))
        into.sum += float(got.get("sum", 0.0))


__all__ = ["HotUpgrade", "SupervisorUpgrade", "UpgradeError", "UpgradeReport"]
