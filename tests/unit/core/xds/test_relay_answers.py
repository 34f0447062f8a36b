"""The ``--workers`` relay's answers over real pipes: a version is applied once every worker said so;
a worker's error, or a following worker's silence past the timeout, fails it, naming the worker, and
the previous config is relayed again; a worker still starting is waited for."""

from __future__ import annotations

import asyncio
import os
import pickle
import struct

from sofamesh.core.config.model import ProxyConfig
from sofamesh.core.xds.relay import Relay

HEAD = struct.Struct("!I")


class FakeWorker:
    """The test's side of one worker's two pipes: reads relayed configs, writes answers."""

    def __init__(self) -> None:
        self.relay_r, self.relay_w = os.pipe()
        self.answer_r, self.answer_w = os.pipe()

    def answer(self, version: int, error: str | None) -> None:
        body = pickle.dumps((version, error))
        os.write(self.answer_w, HEAD.pack(len(body)) + body)

    def read(self) -> tuple[int, ProxyConfig]:
        size = HEAD.unpack(os.read(self.relay_r, HEAD.size))[0]
        body = b""
        while len(body) < size:
            body += os.read(self.relay_r, size - len(body))
        version, _versions, config, _complete, _secrets = pickle.loads(body)
        return version, config

    def close(self) -> None:
        for fd in (self.relay_r, self.answer_w):
            os.close(fd)


def run(body: object) -> None:
    workers = [FakeWorker(), FakeWorker()]
    relay = Relay(ProxyConfig(), (), [w.relay_w for w in workers], [w.answer_r for w in workers], answer_timeout_s=0.3)

    async def main() -> None:
        await relay.open()
        try:
            await body(relay, workers)  # type: ignore[operator]
        finally:
            await relay.stop()

    try:
        asyncio.run(main())
    finally:
        for w in workers:
            w.close()


def test_every_worker_applied_gives_none_and_one_error_names_its_worker_and_goes_back() -> None:
    async def body(relay: Relay, workers: list[FakeWorker]) -> None:
        first = ProxyConfig(drain_timeout_ms=1)
        done = relay.apply(first)
        for w in workers:
            assert w.read() == (1, first)
            w.answer(1, None)
        assert await asyncio.wait_for(done, 5) is None
        bad = ProxyConfig(drain_timeout_ms=2)
        failed = relay.apply(bad)
        workers[0].answer(2, None)
        workers[1].answer(2, "cannot listen on '127.0.0.1:1'")
        assert await asyncio.wait_for(failed, 5) == "worker 1: cannot listen on '127.0.0.1:1'"
        # the previous config relayed again, as the next version: worker 0 goes back
        assert relay.config == first and relay.config_version == 3 and relay.rejected == 1
        for w in workers:
            assert w.read() == (2, bad)
            assert w.read() == (3, first)

    run(body)


def test_a_following_worker_that_does_not_answer_fails_the_version_and_a_starting_one_is_awaited() -> None:
    async def body(relay: Relay, workers: list[FakeWorker]) -> None:
        workers[0].answer(0, None)  # worker 0 follows; worker 1 is still starting
        done = relay.apply(ProxyConfig(drain_timeout_ms=1))
        workers[0].answer(1, None)
        await asyncio.sleep(0.5)  # past the timeout: worker 1 has not started following yet
        assert not done.done()
        workers[1].answer(0, None)
        workers[1].answer(1, None)
        assert await asyncio.wait_for(done, 5) is None
        silent = relay.apply(ProxyConfig(drain_timeout_ms=2))
        workers[1].answer(2, None)
        assert await asyncio.wait_for(silent, 5) == "worker 0: no answer within 0.3 s"

    run(body)
