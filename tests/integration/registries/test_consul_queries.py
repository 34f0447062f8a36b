"""Consul's read parameters at their edges, over a real socket, as Consul's documentation and agent
define them: ``?passing`` takes Go's boolean spellings (anything else is 400 ``Invalid value for
?passing``) and leaves out warning as well as critical entries; every ``tag`` given must be carried;
blocking queries take ``wait`` as a Go duration (``1m30s``; a bare number is 400 ``Invalid wait
time``; 0 means the 5 min default), ``index`` as a whole number (else 400 ``Invalid index``), wait
no longer than ``wait`` plus its 1/16 jitter, answer at once for index 0, wait out an index from
the future (the client must reset), and never answer an index below 1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from sofamesh.plugins.registries.consul.api import ConsulRegistry
from tests.integration.registries.servers import serve_api


def _run(body: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    serve_api(ConsulRegistry("consul", None, address="127.0.0.1:0", reap_interval=0.1), body, 120)


async def _register(http: httpx.AsyncClient, sid: str, port: int, tags: list[str], status: str) -> None:
    body = {
        "ID": sid,
        "Name": "web",
        "Address": "127.0.0.1",
        "Port": port,
        "Tags": tags,
        "Check": {"TTL": "60s", "Status": status},
    }
    resp = await http.put("/v1/agent/service/register", json=body)
    assert resp.status_code == 200, resp.text


def _ids(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {e["Service"]["ID"] if "Service" in e else e["ServiceID"] for e in resp.json()}


def test_passing_takes_go_booleans_and_leaves_out_warning_and_critical() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        await _register(http, "ok", 8001, [], "passing")
        await _register(http, "warn", 8002, [], "warning")
        await _register(http, "down", 8003, [], "critical")
        everyone = {"ok", "warn", "down"}
        for value, expect in [
            ("", {"ok"}),
            ("true", {"ok"}),
            ("1", {"ok"}),
            ("T", {"ok"}),
            ("TRUE", {"ok"}),
            ("false", everyone),
            ("False", everyone),
            ("0", everyone),
            ("f", everyone),
        ]:
            resp = await http.get("/v1/health/service/web", params={"passing": value})
            assert _ids(resp) == expect, value
        assert _ids(await http.get("/v1/health/service/web")) == everyone
        for value in ("yes", "on", "2", "truee"):
            resp = await http.get("/v1/health/service/web", params={"passing": value})
            assert (resp.status_code, resp.text) == (400, "Invalid value for ?passing"), value

    _run(body)


def test_every_tag_given_must_be_carried() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        await _register(http, "a", 8001, ["blue", "v1"], "passing")
        await _register(http, "b", 8002, ["blue"], "passing")
        for path in ("/v1/health/service/web", "/v1/catalog/service/web"):
            assert _ids(await http.get(path, params={"tag": "blue"})) == {"a", "b"}, path
            assert _ids(await http.get(path, params=[("tag", "blue"), ("tag", "v1")])) == {"a"}, path
            assert _ids(await http.get(path, params=[("tag", "v1"), ("tag", "green")])) == set(), path

    _run(body)


def test_blocking_query_parameters_and_edges() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        unknown = await http.get("/v1/health/service/nobody")
        assert (unknown.status_code, unknown.json()) == (200, [])
        assert int(unknown.headers["X-Consul-Index"]) >= 1
        await _register(http, "a", 8001, [], "passing")
        first = await http.get("/v1/health/service/web")
        index = int(first.headers["X-Consul-Index"])
        # malformed parameters, in Consul's words
        for params, words in [
            ({"index": str(index), "wait": "10"}, "Invalid wait time"),
            ({"index": str(index), "wait": "5x"}, "Invalid wait time"),
            ({"index": "-1"}, "Invalid index"),
            ({"index": "abc"}, "Invalid index"),
        ]:
            resp = await http.get("/v1/health/service/web", params=params)
            assert (resp.status_code, resp.text) == (400, words), params
        # index 0 (or none) answers at once, whatever the wait
        t0 = time.monotonic()
        resp = await http.get("/v1/health/service/web", params={"index": "0", "wait": "5s"})
        assert resp.status_code == 200 and time.monotonic() - t0 < 2
        # nothing changes: the answer comes after wait (plus at most its 1/16), with the same index
        t0 = time.monotonic()
        resp = await http.get("/v1/health/service/web", params={"index": str(index), "wait": "1s"})
        took = time.monotonic() - t0
        assert resp.status_code == 200 and int(resp.headers["X-Consul-Index"]) == index
        assert 0.95 <= took < 1.0625 + 2.0, took  # the upper margin is for a loaded machine
        # a compound Go duration and a 0 wait (the 5 min default) both block until a change
        for wait in ("1m30s", "0s"):
            t0 = time.monotonic()
            pending = asyncio.ensure_future(
                http.get("/v1/health/service/web", params={"index": str(index), "wait": wait})
            )
            await asyncio.sleep(0.5)
            assert not pending.done(), wait
            await _register(http, f"x-{wait}", 9000 + len(wait), [], "passing")
            resp = await asyncio.wait_for(pending, 10)
            assert int(resp.headers["X-Consul-Index"]) > index, wait
            assert f"x-{wait}" in _ids(resp) and time.monotonic() - t0 < 10
            index = int(resp.headers["X-Consul-Index"])
        # an index from the future (a client that outlived a restart) waits out its wait and gets the
        # current, lower index back: the client must reset, as Consul's docs say
        t0 = time.monotonic()
        resp = await http.get("/v1/health/service/web", params={"index": str(index + 1000), "wait": "1s"})
        assert int(resp.headers["X-Consul-Index"]) == index and time.monotonic() - t0 >= 0.95

    _run(body)
