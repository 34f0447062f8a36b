"""Connection write batching: writes made inside one batch leave in one transport write, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from sofamesh.core.net.connection import Connection, batch_for


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _connected(loop: asyncio.AbstractEventLoop) -> tuple[Connection, RecordingTransport]:
    conn = Connection(loop)
    t = RecordingTransport()
    conn.connection_made(t)
    return conn, t


def test_writes_inside_a_batch_leave_as_one_write_per_connection_in_order(loop: asyncio.AbstractEventLoop) -> None:
    a, ta = _connected(loop)
    b, tb = _connected(loop)
    batch = batch_for(loop)
    batch.begin()
    a.write(b"one ")
    b.write(b"x")
    a.write(b"two")
    assert ta.writes == [] and tb.writes == []
    batch.end()
    assert ta.writes == [b"one two"]
    assert tb.writes == [b"x"]


def test_writes_outside_a_batch_go_straight_to_the_transport(loop: asyncio.AbstractEventLoop) -> None:
    a, ta = _connected(loop)
    a.write(b"now")
    assert ta.writes == [b"now"]


def test_close_inside_a_batch_flushes_what_was_written_first_and_abort_drops_it(loop: asyncio.AbstractEventLoop) -> None:
    a, ta = _connected(loop)
    b, tb = _connected(loop)
    batch = batch_for(loop)
    batch.begin()
    a.write(b"last words")
    a.close()
    b.write(b"never sent")
    b.abort()
    batch.end()
    assert ta.writes == [b"last words"] and ta.closed
    assert tb.writes == [] and tb.closed


def test_writes_of_several_reads_leave_together_once_the_loop_has_handled_them(
        loop: asyncio.AbstractEventLoop) -> None:
    up, tu = _connected(loop)
    batch = batch_for(loop)
    for i in range(3):  # three downstream reads, each forwarding one request to the same upstream
        batch.begin()
        up.write(b"rq%d " % i)
        batch.end_read()
    assert tu.writes == []
    loop.run_until_complete(asyncio.sleep(0))
    assert tu.writes == [b"rq0 rq1 rq2 "]
    assert not batch.scheduled and not batch.dirty


def test_a_write_outside_a_batch_queues_behind_bytes_waiting_for_the_flush(loop: asyncio.AbstractEventLoop) -> None:
    a, ta = _connected(loop)
    batch = batch_for(loop)
    batch.begin()
    a.write(b"first ")
    batch.end_read()
    a.write(b"second")  # a timer's local reply, say: it must not overtake "first"
    assert ta.writes == []
    loop.run_until_complete(asyncio.sleep(0))
    assert ta.writes == [b"first second"]
    a.write(b"later")
    assert ta.writes == [b"first second", b"later"]
