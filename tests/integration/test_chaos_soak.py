"""The chaos soak (benchmarks/chaos_soak.py) for 30 s: kills and faults happen, the registry keeps
every instance and acknowledged write, retries and outlier detection keep failures rare, and no process it
started survives. The 0.01 % goal is the 10-minute run's (the script exits 1 above it): in 30 s one failed
call is already about 0.005 %, so here the bound is ten times the goal. With ``--store etcd`` Pilot keeps
registrations and policy in a real etcd server that is killed and restarted too."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _alive_under(prefix: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if prefix in text:
            found.append(f"{cmdline.parent.name}: {text[:120]}")
    return found


@pytest.mark.parametrize("store", ["embedded", "etcd"])
def test_chaos_soak_30s(store: str) -> None:
    if store == "etcd" and shutil.which("etcd") is None:
        message = "etcd is not installed: run scripts/setup.d/35-registry-servers.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "chaos_soak.py"),
            "--minutes",
            "0.5",
            "--interval",
            "5",
            "--down",
            "2",
            "--store",
            store,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    out = run.stdout
    assert "missing after the soak: none" in out, out + run.stderr[-3000:]
    kills = re.findall(r"kill -9 (\S+),", out)
    assert ({"etcd", "bolt-2", "dubbo-2"} if store == "etcd" else {"bolt-2", "dubbo-2", "pilot"}) <= set(kills), out
    resets = int(re.search(r"fault proxy resets (\d+) connections", out).group(1))  # type: ignore[union-attr]
    assert resets > 0, out
    for proto in ("bolt", "dubbo", "http", "grpc"):
        row = re.search(rf"^{proto}\s+(\d+)\s+(\d+)", out, re.M)
        assert row is not None and int(row.group(2)) > 100, out
    acked = re.search(r"(\d+) of (\d+) ledger writes acknowledged", out)
    assert acked is not None and int(acked.group(1)) > 10, out
    tmp = re.search(r"logs in (/tmp/sofamesh-soak-[^/]+)/", out)
    assert tmp is not None, out
    assert _alive_under(tmp.group(1)) == [], "processes left behind"
    assert run.returncode in (0, 1), out + run.stderr[-3000:]  # 1: over the 10-minute goal, judged below
    total = re.search(r"^all\s+\d+\s+\d+\s+\d+\s+([0-9.]+)%", out, re.M)
    assert total is not None, out
    assert float(total.group(1)) <= 0.1, out


def test_grpc_calls_reset_in_flight_count_as_lost_and_refused_connects_as_unsent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The soak's sorting of gRPC errors: "connect" alone matched "Connection reset by peer", so calls
    lost in flight on a killed sidecar were counted as never sent."""
    import grpc

    spec = importlib.util.spec_from_file_location("chaos_soak", ROOT / "benchmarks" / "chaos_soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "chaos_soak", soak)  # its dataclasses look their module up
    spec.loader.exec_module(soak)

    def unavailable(details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    assert soak._classify(unavailable("recvmsg:Connection reset by peer")) == "lost"
    assert soak._classify(unavailable("Socket closed")) == "lost"
    assert (
        soak._classify(
            unavailable(
                "failed to connect to all addresses; last error: UNKNOWN: "
                "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"
            )
        )
        == "unsent"
    )
    deadline = grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "")
    assert soak._classify(deadline) == "lost"
    assert soak._classify(ConnectionRefusedError()) == "unsent"
    assert soak._classify(ConnectionResetError()) == "lost"
    assert soak._classify(unavailable("no healthy upstream")) == "failed"  # an answer: the sidecar's error reply


def _soak_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("chaos_soak", ROOT / "benchmarks" / "chaos_soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "chaos_soak", soak)  # its dataclasses look their module up
    spec.loader.exec_module(soak)
    return soak


def test_only_calls_sent_before_their_own_sidecar_was_gone_count_as_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL at 10.0, reaped at 10.05: a call in flight at the kill, or written while the kernel tore
    the process down, is cut; one sent after it was gone (a client that did not notice the close),
    or one that failed before the kill, is not."""
    soak = _soak_module(monkeypatch)
    killed = (10.0, 10.05)
    assert soak._was_cut(9.99, 10.01, killed)  # in flight at the SIGKILL
    assert soak._was_cut(10.02, 10.03, killed)  # sent into the dying process
    assert soak._was_cut(10.02, 10.03, (10.0, -math.inf))  # reaping not seen yet
    assert not soak._was_cut(10.2, 10.21, killed)  # sent after it was gone: the client's own failure
    assert not soak._was_cut(9.0, 9.5, killed)  # failed before the kill
    assert not soak._was_cut(9.0, 9.5, (math.inf, math.inf))  # never killed


def test_a_caller_notices_a_connection_its_sidecar_closed_before_sending_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """As SOFA RPC's and Dubbo's Netty channels go inactive and urllib3 checks a pooled connection,
    the soak's callers connect anew instead of writing a call into a connection already closed."""
    soak = _soak_module(monkeypatch)

    async def scenario() -> tuple[bool, bool]:
        go, closed = asyncio.Event(), asyncio.Event()

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await go.wait()
            w.close()  # the sidecar goes away while the caller is idle
            closed.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = soak._client("bolt", f"127.0.0.1:{port}")
        client.reader, client.writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        before = soak._dropped(client)
        go.set()
        await closed.wait()
        for _ in range(100):  # the FIN arrives
            if soak._dropped(client):
                break
            await asyncio.sleep(0.01)
        after = soak._dropped(client)
        client.close()
        server.close()
        await server.wait_closed()
        return before, after

    assert asyncio.run(scenario()) == (False, True)


def test_callers_retry_as_their_frameworks_do_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dubbo's failover (retries=2) retries any failure but a business exception; SOFA RPC (0
    retries) and grpcio (its own transparent retry) do not retry here; a pooled HTTP client retries
    a GET whose connection failed before any response byte, but not a timeout or a reset after the
    response started."""
    soak = _soak_module(monkeypatch)
    reset, refused = ConnectionResetError("reset"), ConnectionRefusedError("refused")
    assert soak.CALLER_RETRIES == {"bolt": 0, "dubbo": 2, "http": 3, "grpc": 0}
    assert soak._retried("dubbo", reset, False)
    assert soak._retried("dubbo", TimeoutError(), False)
    assert soak._retried("dubbo", RuntimeError("dubbo status 30"), False)  # an error answer: not business
    assert not soak._retried("dubbo", RuntimeError("dubbo: not a value response"), False)  # the provider threw
    assert soak._retried("http", reset, False) and soak._retried("http", refused, False)
    assert soak._retried("http", ConnectionError("the sidecar closed the connection"), False)
    assert not soak._retried("http", reset, True)  # part of the response came
    assert not soak._retried("http", TimeoutError(), False)
    assert not soak._retried("http", RuntimeError("HTTP 503: b'no healthy upstream'"), False)
    for proto in ("bolt", "grpc"):
        assert not soak._retried(proto, reset, False)


class _Flaky:
    """A TCP relay in front of a real provider: the first ``resets`` connections are reset (RST)
    once the request arrived (after ``partial`` bytes of an answer, if given); later ones are
    relayed, unless ``then_down``: the listening socket closes after the resets (a retry is refused)."""

    def __init__(self, upstream: int, resets: int = 1, partial: bytes = b"", then_down: bool = False) -> None:
        self.upstream, self.resets, self.partial, self.then_down = upstream, resets, partial, then_down
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections <= self.resets:
            await r.read(65536)
            if self.partial:
                w.write(self.partial)
                await w.drain()
                await asyncio.sleep(0.05)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
            if self.connections == self.resets and self.then_down and self.server is not None:
                self.server.close()
            return
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pump(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            b.close()

        await asyncio.gather(pump(r, uw), pump(ur, w))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def test_a_call_reset_before_its_answer_is_answered_by_the_retry_only_where_the_framework_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real demo providers behind a relay that resets the first connection once the request came:
    the Dubbo and HTTP callers' retry on a new connection is answered; the Bolt caller (SOFA RPC,
    no retries) fails; an HTTP call reset after its response started is not retried; a retry
    refused because the sidecar is down is a failed attempt (Dubbo: three attempts, all failed)."""
    soak = _soak_module(monkeypatch)
    from sofamesh import demo

    async def one(proto: str, **flaky: Any) -> tuple[bool, list[str], int]:
        provider = await demo.Provider(proto, 1).start()
        relay = _Flaky(provider.port, **flaky)
        port = await relay.start()
        address = f"127.0.0.1:{port}"
        try:
            client, failures, answered = await asyncio.wait_for(
                soak._call(proto, address, soak._client(proto, address)), 30
            )
            client.close()
            return answered, [type(f).__name__ for f in failures], relay.connections
        finally:
            await relay.stop()
            await provider.stop()

    async def scenario() -> dict[str, tuple[bool, list[str], int]]:
        return {
            "dubbo": await one("dubbo"),
            "http": await one("http"),
            "bolt": await one("bolt"),
            "http_partial": await one("http", partial=b"HTTP/1.1 200 OK\r\n"),
            "dubbo_down": await one("dubbo", then_down=True),
        }

    r = asyncio.run(scenario())
    assert r["dubbo"][0] and len(r["dubbo"][1]) == 1 and r["dubbo"][2] == 2, r
    assert r["http"][0] and len(r["http"][1]) == 1 and r["http"][2] == 2, r
    assert not r["bolt"][0] and len(r["bolt"][1]) == 1 and r["bolt"][2] == 1, r
    assert not r["http_partial"][0] and len(r["http_partial"][1]) == 1, r
    answered, failures, _ = r["dubbo_down"]
    assert not answered and failures[1:] == ["ConnectionRefusedError", "ConnectionRefusedError"], r
