"""Leader election among Pilot replicas, on the store they share, for work that must run once
(registry sync): an etcd lease and a transaction (``EtcdElection``), or kazoo's ``Election`` recipe
(``ZookeeperElection``). Never a protocol of our own.

etcd: a candidate grants a lease and puts the election key under it only if the key does not exist
(``create_revision == 0``); the one that succeeded leads while it keeps the lease alive (every
TTL/3). The others watch the key and try again when it is deleted (the leader stopped, or its lease
ran out because it died). ZooKeeper: ``Election.run`` on a kazoo thread; the leader holds its
sequential node while its session lives, and is deposed when the session is suspended or lost.

``elected`` and ``deposed`` run in the event loop; they may be coroutines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import httpx
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

log = logging.getLogger("sofamesh.pilot.election")
Callback = Callable[[], Awaitable[None] | None]


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


async def _call(cb: Callback) -> None:
    result = cb()
    if result is not None:
        await result


class EtcdElection:
    """Lead while holding ``key`` under our own lease of ``ttl_s`` seconds."""

    def __init__(self, endpoint: str, key: str, identity: str, ttl_s: int = 5) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.key = key
        self.identity = identity
        self.ttl = max(2, int(ttl_s))
        self.leader = False
        self.terms = 0
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._lease = 0

    async def start(self, elected: Callback, deposed: Callback) -> None:
        self._http = httpx.AsyncClient(base_url=self.endpoint, timeout=httpx.Timeout(5.0, read=None))
        self._task = asyncio.get_running_loop().create_task(self._run(elected, deposed))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # deposed (sync stopped) on the way out
        http, self._http = self._http, None
        if http is None:
            return
        with contextlib.suppress(httpx.HTTPError):  # hand over at once instead of after the TTL
            if self._lease:
                await http.post("/v3/lease/revoke", json={"ID": str(self._lease)})
        await http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        return dict((await self._http.post(path, json=body)).raise_for_status().json())

    async def _run(self, elected: Callback, deposed: Callback) -> None:
        while True:
            try:
                if await self._campaign():
                    self.leader, self.terms = True, self.terms + 1
                    log.info("election %s: %s leads", self.key, self.identity)
                    try:
                        await _call(elected)
                        await self._hold()
                    finally:
                        self.leader = False
                        await _call(deposed)
                        log.info("election %s: %s no longer leads", self.key, self.identity)
                else:
                    await self._wait_for_vacancy()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.info("election %s: %s; trying again", self.key, exc)
                await asyncio.sleep(self.ttl / 3)

    async def _campaign(self) -> bool:
        self._lease = int((await self._post("/v3/lease/grant", {"TTL": str(self.ttl)}))["ID"])
        key = _b64(self.key)
        done = await self._post(
            "/v3/kv/txn",
            {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": _b64(self.identity), "lease": str(self._lease)}}],
            },
        )
        if done.get("succeeded"):
            return True
        await self._post("/v3/lease/revoke", {"ID": str(self._lease)})
        self._lease = 0
        return False

    async def _hold(self) -> None:
        """Keep the lease alive; return when it is lost."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            data = await self._post("/v3/lease/keepalive", {"ID": str(self._lease)})
            if int(data.get("result", {}).get("TTL", "0")) <= 0:
                self._lease = 0
                return

    async def _wait_for_vacancy(self) -> None:
        """Return when the election key is deleted (or is already gone)."""
        assert self._http is not None
        key = _b64(self.key)
        current = await self._post("/v3/kv/range", {"key": key})
        if not current.get("kvs"):
            return
        start = int(current["header"]["revision"]) + 1
        body = {"create_request": {"key": key, "start_revision": str(start)}}
        async with self._http.stream("POST", "/v3/watch", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                events = json.loads(line).get("result", {}).get("events", [])
                if any(ev.get("type") == "DELETE" for ev in events):
                    return

    def describe(self) -> dict[str, Any]:
        return {"type": "etcd", "key": self.key, "identity": self.identity, "leader": self.leader, "terms": self.terms}


class ZookeeperElection:
    """Lead while kazoo's ``Election`` on ``path`` has chosen us and our session is connected."""

    def __init__(self, hosts: str, path: str, identity: str, session_timeout_s: float = 10.0) -> None:
        self.hosts = hosts
        self.path = path
        self.identity = identity
        self.leader = False
        self.terms = 0
        self._timeout = session_timeout_s
        self._zk: KazooClient | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self, elected: Callback, deposed: Callback) -> None:
        loop = asyncio.get_running_loop()
        zk = KazooClient(hosts=self.hosts, timeout=self._timeout, connection_retry={"max_tries": -1, "max_delay": 1.0})
        await asyncio.to_thread(zk.start, self._timeout)
        self._zk = zk
        election = zk.Election(self.path, self.identity)

        def on_state(state: str) -> None:
            if state != KazooState.CONNECTED:
                self._lost.set()

        def lead() -> None:
            self._lost.clear()
            self.leader, self.terms = True, self.terms + 1
            asyncio.run_coroutine_threadsafe(_call(elected), loop).result()
            try:
                while not self._stop.is_set() and not self._lost.is_set():
                    self._stop.wait(0.2)
            finally:
                self.leader = False
                if not loop.is_closed():
                    asyncio.run_coroutine_threadsafe(_call(deposed), loop).result()

        def contend() -> None:
            while not self._stop.is_set():
                try:
                    election.run(lead)
                except KazooException as exc:
                    log.info("election %s: %s; contending again", self.path, exc)
                self._stop.wait(0.5)

        zk.add_listener(on_state)
        self._election = election
        self._thread = threading.Thread(target=contend, name="pilot-election", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._zk is not None:
            with contextlib.suppress(Exception):
                self._election.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        if self._zk is not None:
            zk, self._zk = self._zk, None

            def close() -> None:
                with contextlib.suppress(Exception):
                    zk.stop()
                    zk.close()

            await asyncio.to_thread(close)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "zookeeper",
            "path": self.path,
            "identity": self.identity,
            "leader": self.leader,
            "terms": self.terms,
        }


class Election(Protocol):
    leader: bool

    async def start(self, elected: Callback, deposed: Callback) -> None:
        """Contend; call ``elected`` on winning and ``deposed`` on losing (or stopping) the lead."""

    async def stop(self) -> None:
        """Leave the election (a leader is deposed first)."""

    def describe(self) -> dict[str, Any]:
        """What ``/debug/sync`` shows: who this is, whether it leads, how many terms it led."""


def election_for(kind: str, options: Mapping[str, Any], ttl_s: int) -> Election:
    """The election ``sync.election`` names; this replica is ``<host>-<pid>``."""
    from sofamesh.pilot.options import check_options

    identity = f"{socket.gethostname()}-{os.getpid()}"
    what = f"election {kind!r}"
    if kind == "etcd":
        opts = check_options(options, ("endpoint", "key"), "sync.election.options", what)
        return EtcdElection(
            str(opts.get("endpoint", "http://127.0.0.1:2379")),
            str(opts.get("key", "/sofamesh/elections/registry-sync")),
            identity,
            ttl_s,
        )
    opts = check_options(options, ("hosts", "path"), "sync.election.options", what)
    return ZookeeperElection(
        str(opts.get("hosts", "127.0.0.1:2181")),
        str(opts.get("path", "/sofamesh/elections/registry-sync")),
        identity,
        float(ttl_s),
    )


__all__ = ["Election", "EtcdElection", "ZookeeperElection", "election_for"]
