"""``sofamesh demo``: the whole mesh on one machine, in this process, on free 127.0.0.1 ports.

An embedded Pilot; Bolt, Dubbo, HTTP and gRPC providers (written here on the project's own codecs
and grpcio) registered through Pilot's Open Service Registry API; two sidecars that take their
listeners, routes, clusters and endpoints from Pilot over xDS; consumers that call every service
by name through their sidecar's egress listener. Mid-run one instance of each service joins and
one leaves (deregistered, then stopped once no sidecar routes to it). Prints a table per protocol
and a one-line verdict; exits 0 when every call succeeded and the traffic moved.

gRPC consumers are grpcio channels to the sidecars' HTTP egress listener with ``:authority``
``greeter``; the sidecar sniffs HTTP/2 and forwards to the greeter cluster over HTTP/2.

Bolt consumers are PyPI ``anthunder`` ``AioClient`` instances (Ant Group's SOFA Bolt client, the
``demo`` extra that ``make demo`` installs), so the demo shows a third-party client in the mesh, not
only the project's own codecs on both ends. Without anthunder the Bolt consumers fall back to the
project's own Bolt client, and the report says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sofamesh.core.admin import HttpMini
from sofamesh.core.codec import CodecLimits, Role
from sofamesh.core.config.loader import from_mapping
from sofamesh.core.events import NEED_DATA, BodyChunk, EndOfMessage, Heartbeat, RequestHead, ResponseHead
from sofamesh.core.headers import Headers
from sofamesh.core.hessian import HessianReader
from sofamesh.core.net import loop as loop_mod
from sofamesh.core.server import Server
from sofamesh.plugins.protocols.bolt import frames as bolt_frames
from sofamesh.plugins.protocols.bolt.codec import BoltCodecFactory
from sofamesh.plugins.protocols.dubbo import frames as dubbo_frames
from sofamesh.plugins.protocols.dubbo.codec import DubboCodecFactory
from sofamesh.plugins.protocols.http1.codec import Http1CodecFactory
from sofamesh.testing import free_port

BOLT_SERVICE = "com.sofamesh.demo.EchoService:1.0"
DUBBO_SERVICE = "com.sofamesh.demo.EchoService"
HTTP_SERVICE = "hello"
GRPC_SERVICE = "greeter"
GRPC_METHOD = "/sofamesh.demo.Greeter/WhoAmI"
SERVICES = {"bolt": BOLT_SERVICE, "dubbo": DUBBO_SERVICE, "http": HTTP_SERVICE, "grpc": GRPC_SERVICE}
PHASE_S = 3.0  # traffic before the change and after it
CONSUMERS_PER_SIDECAR = 2


# -- providers ---------------------------------------------------------------------------------------
class Provider:
    """One provider instance of one protocol on a free port."""

    def __init__(self, protocol: str, index: int) -> None:
        self.protocol = protocol
        self.name = f"{protocol}-{index}"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._stop: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> Provider:
        if self.protocol in ("bolt", "dubbo"):
            server = await asyncio.start_server(self._serve_rpc, "127.0.0.1", self.port)

            async def stop_rpc() -> None:
                server.close()
                for w in list(self._writers):
                    w.close()

            self._writers: set[asyncio.StreamWriter] = set()
            self._stop = stop_rpc
        elif self.protocol == "http":
            name = self.name

            async def handle(path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
                return 200, "text/plain", f"{name}\n".encode()

            mini = HttpMini(self.address, handle)
            await mini.start()
            self._stop = mini.stop
        else:
            import grpc

            name_bytes = self.name.encode()

            async def who(request: bytes, context: Any) -> bytes:
                return name_bytes

            gserver = grpc.aio.server()
            gserver.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "sofamesh.demo.Greeter", {"WhoAmI": grpc.unary_unary_rpc_method_handler(who)}),))
            gserver.add_insecure_port(self.address)
            await gserver.start()

            async def stop_grpc() -> None:
                await gserver.stop(0.5)

            self._stop = stop_grpc
        return self

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()
            self._stop = None

    async def _serve_rpc(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bolt = self.protocol == "bolt"
        factory = BoltCodecFactory() if bolt else DubboCodecFactory()
        codec = factory.new_codec(Role.SERVER, CodecLimits())
        payload = self.name.encode()
        self._writers.add(writer)
        try:
            while True:
                data = await reader.read(65536)
                codec.receive_data(data)
                while (ev := codec.next_event()) is not NEED_DATA:
                    if isinstance(ev, RequestHead) and not ev.oneway:
                        if bolt:
                            writer.write(bolt_frames.encode_response(
                                ev.request_id, 0, class_name=b"com.alipay.sofa.rpc.core.response.SofaResponse",
                                content=payload))
                        else:  # hessian2 response: RESPONSE_VALUE (int 1) then the string
                            writer.write(dubbo_frames.encode_frame(
                                dubbo_frames.SERIALIZATION_HESSIAN2, dubbo_frames.STATUS_OK, ev.request_id,
                                b"\x91" + dubbo_frames.encode_string(self.name)))
                    elif isinstance(ev, Heartbeat) and not ev.reply:
                        writer.write(codec.heartbeat_reply(ev))
                if not data:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


# -- consumers ---------------------------------------------------------------------------------------
def _anthunder_client(address: str) -> Any:
    """An anthunder ``AioClient`` whose every call goes to ``address`` (a sidecar's Bolt egress
    listener); None when anthunder is not installed."""
    try:
        from anthunder.client.aio_client import AioClient
        from mytracer import SpanContext
    except ImportError:
        return None
    host, port = address.rsplit(":", 1)
    # Each client first tries anthunder's mesh app API (127.0.0.1:13330), which the demo's sidecars do
    # not serve, and logs an ERROR when it is not there; the calls go straight to the egress listener.
    logging.getLogger("anthunder").setLevel(logging.CRITICAL)

    class ToSidecar(AioClient):  # type: ignore[misc]  # anthunder ships no type hints
        def _get_address(self, interface: str) -> tuple[str, int]:
            return host, int(port)

    return ToSidecar("sofamesh-demo"), SpanContext


class AnthunderBoltClient:
    """Bolt calls by PyPI anthunder's ``AioClient`` (its own loop in its own thread) to a sidecar."""

    def __init__(self, client: Any, span_context: Any) -> None:
        self.client = client
        self.span_context = span_context

    async def call(self) -> str:
        fut = self.client.invoke_async(BOLT_SERVICE, "whoami", b"", spanctx=self.span_context(), timeout_ms=3000)
        pkg = await asyncio.wait_for(asyncio.wrap_future(fut), 5)
        return str(pkg.content.decode())

    def close(self) -> None:
        """anthunder has no close(): cancel its tasks (its reader logs the cancel, silenced with the
        rest of its logger), then stop the loop its thread runs."""
        loop = self.client._loop

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=2) if tasks else None

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(3)
        except (TimeoutError, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)


def _bolt_client(address: str) -> Any:
    made = _anthunder_client(address)
    return AnthunderBoltClient(*made) if made is not None else RpcClient("bolt", address)


class RpcClient:
    """One connection to a sidecar's Bolt or Dubbo egress listener; calls one at a time."""

    def __init__(self, protocol: str, address: str) -> None:
        self.protocol = protocol
        self.address = address
        self.ids = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        factory = BoltCodecFactory() if protocol == "bolt" else DubboCodecFactory()
        self.codec = factory.new_codec(Role.CLIENT, CodecLimits())

    async def call(self) -> str:
        if self.writer is None:
            host, port = self.address.rsplit(":", 1)
            self.reader, self.writer = await asyncio.open_connection(host, int(port))
        assert self.reader is not None
        self.ids += 1
        if self.protocol == "bolt":
            header = bolt_frames.encode_header_map([
                ("sofa_head_target_service", BOLT_SERVICE), ("service", BOLT_SERVICE),
                ("sofa_head_method_name", "whoami")])
            frame = bolt_frames.encode_request(self.ids, timeout_ms=3000, header=header,
                                               class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest")
        else:
            frame = dubbo_frames.encode_request(self.ids, DUBBO_SERVICE, "whoami", version="1.0.0",
                                                attachments={"path": DUBBO_SERVICE, "version": "1.0.0"})
        self.writer.write(frame)
        while True:
            ev = self.codec.next_event()
            if ev is NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), 5)
                if not data:
                    raise ConnectionError("the sidecar closed the connection")
                self.codec.receive_data(data)
                continue
            if isinstance(ev, ResponseHead) and ev.raw is not None:
                return self._served_by(ev.raw)

    def _served_by(self, raw: bytes) -> str:
        if self.protocol == "bolt":
            fields = bolt_frames.V1_RESPONSE.unpack_from(raw)
            status, content_len = fields[6], fields[-1]
            if status != 0:
                raise RuntimeError(f"bolt status {status}")
            return raw[len(raw) - content_len:].decode()
        head = dubbo_frames.parse_header(raw)
        if head.status != dubbo_frames.STATUS_OK:
            raise RuntimeError(f"dubbo status {head.status}")
        body = HessianReader(raw, dubbo_frames.HEADER_LEN)
        if body.read_int() != 1:
            raise RuntimeError("dubbo: not a value response")
        return body.read_string()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HttpClient:
    """A keep-alive HTTP/1.1 client on the project's own codec, calling by Host: service name."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.codec = Http1CodecFactory().new_codec(Role.CLIENT, CodecLimits())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.response_started = False  # a byte of the current call's response arrived

    async def call(self) -> str:
        self.response_started = False
        if self.writer is None or not self.codec.keep_alive:
            host, port = self.address.rsplit(":", 1)
            self.reader, self.writer = await asyncio.open_connection(host, int(port))
            self.codec = Http1CodecFactory().new_codec(Role.CLIENT, CodecLimits())
        assert self.reader is not None
        self.writer.write(self.codec.send(RequestHead(protocol="http1", service=HTTP_SERVICE, method="GET",
                                                      path="/whoami", headers=Headers([("host", HTTP_SERVICE)]))))
        status, body = 0, b""
        while True:
            ev = self.codec.next_event()
            if ev is NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), 5)
                self.codec.receive_data(data)
                if not data:
                    raise ConnectionError("the sidecar closed the connection")
                self.response_started = True
                continue
            if isinstance(ev, ResponseHead):
                status = ev.status
            elif isinstance(ev, BodyChunk):
                body += ev.data
            if isinstance(ev, EndOfMessage) or (isinstance(ev, ResponseHead) and ev.end_stream):
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {body[:80]!r}")
                return body.decode().strip()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class GrpcClient:
    """grpcio through a sidecar's HTTP egress listener, by service name (the ``:authority``)."""

    def __init__(self, address: str) -> None:
        import grpc

        self.channel = grpc.aio.insecure_channel(address, options=[("grpc.default_authority", GRPC_SERVICE)])
        self.stub = self.channel.unary_unary(GRPC_METHOD)
        self.writer: object = None

    async def call(self) -> str:
        reply = await self.stub(b"", timeout=5)
        return bytes(reply).decode()

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        await self.channel.close(None)


# -- the run -----------------------------------------------------------------------------------------
@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    served: dict[str, Counter[str]] = field(default_factory=lambda: {"before": Counter(), "after": Counter()})
    last_seen: dict[str, float] = field(default_factory=dict)


async def _consume(client: Any, tally: Tally, phase: list[str], until: asyncio.Event) -> None:
    while not until.is_set():
        start = time.perf_counter()
        current = phase[0]
        try:
            who = await client.call()
        except Exception as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}")
            client.close()
            client.writer = None
            await asyncio.sleep(0.01)
            continue
        tally.latencies.append((time.perf_counter() - start) * 1000)
        tally.served[current][who] += 1
        tally.last_seen[who] = time.monotonic()
        await asyncio.sleep(0)


async def _api(session: Any, method: str, url: str, body: dict[str, Any] | None = None) -> None:
    async with session.request(method, url, json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"{method} {url}: {r.status} {await r.text()}")


def _endpoints(sidecar: Server, protocol: str) -> set[str]:
    suffix = f"|{SERVICES[protocol]}"
    for name, c in sidecar.clusters.items():
        if name.endswith(suffix):
            return {e.address for e in c.endpoints}
    return set()


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def _wait_endpoints(sidecars: list[Server], protocol: str, instances: list[Provider], what: str) -> None:
    want = {p.address for p in instances}
    await _wait(lambda: all(_endpoints(sc, protocol) == want for sc in sidecars), 10,
                f"{what} of {protocol} to reach the sidecars")


async def _until_signalled() -> None:
    """Until SIGINT or SIGTERM."""
    import contextlib
    import signal

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


async def _demo(verbose: bool, dashboard: bool = False) -> int:
    import aiohttp

    from sofamesh.core.xds.client import attach
    from sofamesh.pilot.app import Pilot
    from sofamesh.pilot.config import parse as parse_pilot_config

    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="sofamesh-demo-")
    pilot = Pilot(parse_pilot_config({
        "xds": {"address": "127.0.0.1:0"}, "api": {"address": "127.0.0.1:0"}, "data_dir": str(Path(tmp.name)),
        "debounce": {"quiet_ms": 20, "max_delay_ms": 200}, "grace_s": 0.2,
        "dashboard": {"scrape_interval_s": 1.0, "rate_window_s": 10.0}}))
    await pilot.start()
    api = f"http://127.0.0.1:{pilot.api_port}"
    providers = {p: [await Provider(p, i).start() for i in (1, 2, 3)] for p in SERVICES}
    sidecars: list[Server] = []
    clients: list[Any] = []
    try:
        async with aiohttp.ClientSession() as session:
            async def register(p: Provider) -> None:
                await _api(session, "PUT", f"{api}/v1/services/{SERVICES[p.protocol]}/instances/{p.name}",
                           {"address": "127.0.0.1", "port": p.port, "protocol": p.protocol,
                            "version": "1.0.0" if p.protocol == "dubbo" else ""})

            for proto in SERVICES:
                for p in providers[proto][:2]:
                    await register(p)
            for i in (1, 2):
                ports = {"outbound": free_port(), "bolt": free_port(), "dubbo": free_port()}
                config = from_mapping({"admin": {"address": "127.0.0.1:0"}, "drain_timeout_ms": 1000, "xds": {
                    "address": f"127.0.0.1:{pilot.xds_port}", "node_id": f"demo-app-{i}",
                    "cluster": f"demo-app-{i}", "initial_fetch_timeout_ms": 10_000,
                    "metadata": {f"sofamesh.{k}_port": v for k, v in ports.items()}}})
                server = Server(config)
                await server.start()
                await attach(server)
                sidecars.append(server)
            for proto in SERVICES:
                await _wait_endpoints(sidecars, proto, providers[proto][:2], "the first instances")
            egress = {proto: [_egress(sc, proto) for sc in sidecars] for proto in ("bolt", "dubbo", "http")}
            tallies = {p: Tally() for p in SERVICES}
            phase = ["before"]
            stop = asyncio.Event()
            tasks = []
            for proto in ("bolt", "dubbo", "http"):
                for address in egress[proto]:
                    for _ in range(CONSUMERS_PER_SIDECAR):
                        client = (_bolt_client(address) if proto == "bolt" else RpcClient(proto, address)
                                  if proto == "dubbo" else HttpClient(address))
                        clients.append(client)
                        tasks.append(asyncio.get_running_loop().create_task(
                            _consume(client, tallies[proto], phase, stop)))
            egress["grpc"] = egress["http"]  # gRPC rides the HTTP egress listener (HTTP/2 is sniffed)
            grpc_clients = [GrpcClient(address) for address in egress["grpc"] for _ in range(CONSUMERS_PER_SIDECAR)]
            for client in grpc_clients:
                tasks.append(asyncio.get_running_loop().create_task(_consume(client, tallies["grpc"], phase, stop)))
            if dashboard:  # traffic goes on until the user stops it: watch it at /ui
                print(f"sofamesh demo: the mesh is running; dashboard at {api}/ui (Pilot's API: {api}); "
                      "Ctrl-C stops it", flush=True)
                await _until_signalled()
                stop.set()
                await asyncio.wait(tasks, timeout=10)
                for client in grpc_clients:
                    await client.aclose()
                calls = sum(len(t.latencies) for t in tallies.values())
                failed = sum(len(t.errors) for t in tallies.values())
                print(f"sofamesh demo: stopped after {calls + failed} calls, {failed} failed", flush=True)
                return 0 if failed == 0 else 1
            await asyncio.sleep(PHASE_S)
            # The live change: instance 3 joins, instance 1 leaves (deregistered, then stopped once no
            # sidecar routes to it any more).
            change_start = time.perf_counter()
            for proto in SERVICES:
                await register(providers[proto][2])
                await _api(session, "DELETE", f"{api}/v1/services/{SERVICES[proto]}/instances/{proto}-1")
            for proto in SERVICES:
                await _wait_endpoints(sidecars, proto, providers[proto][1:], "the change")
            change_ms = (time.perf_counter() - change_start) * 1000
            phase[0] = "after"
            await asyncio.sleep(0.3)  # calls sent just before the change finish on instance 1
            for proto in SERVICES:
                await providers[proto][0].stop()
            await asyncio.sleep(PHASE_S)
            stop.set()
            await asyncio.wait(tasks, timeout=10)
            for client in grpc_clients:
                await client.aclose()
        elapsed = time.perf_counter() - t0
        ok = _report(tallies, providers, egress, sidecars, change_ms, elapsed, verbose)
        return 0 if ok else 1
    finally:
        for c in clients:
            c.close()
        for sc in sidecars:
            await sc.shutdown()
        for plist in providers.values():
            for p in plist:
                await p.stop()
        await pilot.stop()
        tmp.cleanup()


def _egress(sidecar: Server, protocol: str) -> str:
    for name, h in sidecar.listeners.items():
        if (protocol == "http" and name.startswith("outbound|") and name.count("|") == 1) or \
                name.startswith(f"outbound|{protocol}|"):
            return h.config.address
    raise RuntimeError(f"the sidecar has no {protocol} egress listener: {sorted(sidecar.listeners)}")


def _bolt_consumers() -> str:
    try:
        import anthunder  # noqa: F401
    except ImportError:
        return ("sofamesh's own Bolt client (PyPI anthunder is not installed: `make demo`, or "
                "`pip install 'sofamesh[demo]'`, brings it)")
    return "PyPI anthunder 0.8.1 AioClient (a third-party SOFA Bolt client)"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _report(tallies: dict[str, Tally], providers: dict[str, list[Provider]], egress: dict[str, list[str]],
            sidecars: list[Server], change_ms: float, elapsed: float, verbose: bool) -> bool:
    total = sum(len(t.latencies) + len(t.errors) for t in tallies.values())
    print(f"sofamesh demo: an embedded Pilot, 12 providers (Bolt, Dubbo, HTTP, gRPC) registered through its "
          f"Open Service Registry API, two sidecars configured over xDS; {total} calls by service name.\n")
    ok = True
    for proto, tally in tallies.items():
        calls = len(tally.latencies) + len(tally.errors)
        path = f"through the sidecars' egress listeners {', '.join(egress[proto])}"
        print(f"{proto.upper():<6} {SERVICES[proto]}  {path}")
        if proto == "bolt":
            print(f"       consumers: {_bolt_consumers()}")
        print(f"       calls {calls}  errors {len(tally.errors)}  p50 {_pct(tally.latencies, 50):.2f} ms  "
              f"p99 {_pct(tally.latencies, 99):.2f} ms")
        print(f"       {'endpoint':<28}{'before':>8}{'after':>8}")
        for i, p in enumerate(providers[proto]):
            before, after = tally.served["before"][p.name], tally.served["after"][p.name]
            note = "  (left)" if i == 0 else "  (joined)" if i == 2 else ""
            print(f"       {p.name + ' ' + p.address:<28}{before:>8}{after:>8}{note}")
        print()
        ok = ok and not tally.errors and calls > 0
        b, a = tally.served["before"], tally.served["after"]
        names = [p.name for p in providers[proto]]
        ok = ok and b[names[0]] > 0 and b[names[1]] > 0 and a[names[0]] == 0 and a[names[2]] > 0
        if verbose and tally.errors:
            for e in tally.errors[:5]:
                print(f"       error: {e}")
    for sc in sidecars:
        x = sc.xds.describe()
        versions = ", ".join(f"{t}={v['version'][:8]}" for t, v in x["types"].items())
        print(f"sidecar {x['node']}: xDS {x['mode']} from {x['server']}, applied {versions}, "
              f"last NACK: {json.dumps(x['last_nack'])}")
    errors = sum(len(t.errors) for t in tallies.values())
    print()
    if ok:
        print(f"verdict: OK: {total} calls, {errors} failed; instance 3 of every service joined and took traffic, "
              f"instance 1 left, the sidecars had the change {change_ms:.0f} ms after the "
              f"registry writes; {elapsed:.1f} s in all")
    else:
        print(f"verdict: UNEXPECTED: {errors} failed call(s) of {total}, or traffic did not move as registered "
              "(run with -v for errors)")
    return ok


def run_demo(verbose: bool = False, dashboard: bool = False) -> int:
    """``dashboard``: keep the mesh and its traffic running, for Pilot's ``/ui``, until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return loop_mod.run(_demo(verbose, dashboard))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__: list[Any] = ["run_demo"]
