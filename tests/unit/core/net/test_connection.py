"""Connection write batching: writes made inside one batch leave in one transport write, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from sofamesh.core.net.connection import Connection, WriteBatch, batch_for


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


def test_close_inside_a_batch_flushes_what_was_written_first_and_abort_drops_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
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


def test_writes_of_several_reads_leave_together_once_the_loop_has_handled_them(loop: asyncio.AbstractEventLoop) -> None:
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


def _round(loop: asyncio.AbstractEventLoop, *conns: Connection) -> None:
    """One loop round in which each of ``conns`` is read once and writes to itself."""
    batch = batch_for(loop)
    for c in conns:
        batch.begin()
        c.write(b"r")
        batch.end_read()
    loop.run_until_complete(asyncio.sleep(0))


def _serial(loop: asyncio.AbstractEventLoop, conn: Connection, t: RecordingTransport) -> WriteBatch:
    """Two rounds of one read each: the batch writes through from now on."""
    batch = batch_for(loop)
    _round(loop, conn)
    _round(loop, conn)
    assert batch.serial
    t.writes.clear()
    return batch


def _answers(batch: WriteBatch, conn: Connection, n: int) -> None:
    """One read that answers ``n`` calls on ``conn``."""
    batch.begin()
    for i in range(n):
        conn.write(b"%d " % i)
        batch.send_now()
    batch.end_read()


def test_one_read_a_round_writes_through_after_two_such_rounds(loop: asyncio.AbstractEventLoop) -> None:
    a, ta = _connected(loop)
    batch = batch_for(loop)
    _round(loop, a)
    assert not batch.serial  # one round of one read proves nothing yet
    _round(loop, a)
    assert batch.serial
    ta.writes.clear()
    batch.begin()
    a.write(b"head ")
    a.write(b"body")
    assert ta.writes == []  # still one write per connection per read
    batch.end_read()
    assert ta.writes == [b"head body"]  # at the end of the read, not a loop turn later
    loop.run_until_complete(asyncio.sleep(0))
    assert ta.writes == [b"head body"] and batch.serial and not batch.dirty


def test_a_second_read_in_the_round_is_batched_and_ends_writing_through(loop: asyncio.AbstractEventLoop) -> None:
    a, ta = _connected(loop)
    b, tb = _connected(loop)
    up, tu = _connected(loop)
    batch = _serial(loop, a, ta)
    for c in (a, b):  # two downstream reads in one round, each forwarding to the same upstream
        batch.begin()
        c.write(b"ok")
        up.write(b"rq ")
        batch.end_read()
    assert ta.writes == [b"ok"] and tu.writes == [b"rq "]  # the round's first read went through
    assert tb.writes == []  # the second waits for the round's end, with the upstream's second request
    loop.run_until_complete(asyncio.sleep(0))
    assert tb.writes == [b"ok"] and tu.writes == [b"rq ", b"rq "]
    assert not batch.serial
    _round(loop, a)  # the next round is batched again until two rounds of one read
    assert not batch.serial
    batch.begin()
    a.write(b"x")
    batch.end_read()
    assert ta.writes[-1] == b"r"
    loop.run_until_complete(asyncio.sleep(0))
    assert ta.writes[-1] == b"x" and batch.serial


def test_send_now_sends_a_complete_answer_before_the_read_ends_only_one_at_a_time(
    loop: asyncio.AbstractEventLoop,
) -> None:
    a, ta = _connected(loop)
    batch = batch_for(loop)
    batch.begin()
    a.write(b"answer")
    batch.send_now()
    assert ta.writes == []  # rounds not known to be serial: batched as before
    batch.end_read()
    loop.run_until_complete(asyncio.sleep(0))
    batch = _serial(loop, a, ta)
    batch.begin()
    a.write(b"answer")
    batch.send_now()
    assert ta.writes == [b"answer"]
    a.write(b" bookkeeping")  # written after: queued behind, out at the read's end
    assert ta.writes == [b"answer"]
    batch.end_read()
    assert ta.writes == [b"answer", b" bookkeeping"]
    loop.run_until_complete(asyncio.sleep(0))
    assert batch.serial  # the read that sent early counted as the round's one read
    _answers(batch, a, 1)
    loop.run_until_complete(asyncio.sleep(0))
    assert ta.writes[-1] == b"0 " and batch.serial


def test_rounds_answering_several_calls_at_once_stay_batched(loop: asyncio.AbstractEventLoop) -> None:
    """One connection with 16 calls in flight: each read answers many; their answers leave in one
    write per read, as before, never one early and the rest after."""
    a, ta = _connected(loop)
    batch = _serial(loop, a, ta)
    _answers(batch, a, 3)
    assert ta.writes == [b"0 ", b"1 2 "]  # the round that showed it: one early write
    loop.run_until_complete(asyncio.sleep(0))
    assert not batch.serial
    for _ in range(3):  # from then on, batched as before
        ta.writes.clear()
        _answers(batch, a, 3)
        assert ta.writes == []
        loop.run_until_complete(asyncio.sleep(0))
        assert ta.writes == [b"0 1 2 "] and not batch.serial


def test_a_read_beginning_several_calls_ends_writing_through(loop: asyncio.AbstractEventLoop) -> None:
    """16 requests in one read (calls pipelined on one connection) are not one at a time."""
    a, ta = _connected(loop)
    batch = _serial(loop, a, ta)
    batch.begin()
    batch.calls += 16  # what Stream.start counts
    a.write(b"16 requests")
    batch.end_read()
    loop.run_until_complete(asyncio.sleep(0))
    assert not batch.serial
    _round(loop, a)
    batch.begin()
    a.write(b"next")
    batch.end_read()
    assert ta.writes[-1] == b"r"  # batched until two rounds of one call each
    loop.run_until_complete(asyncio.sleep(0))
    assert ta.writes[-1] == b"next"
