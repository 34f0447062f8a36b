"""sofamesh.testing's judge of a proxy's output: what counts as an unhandled exception, and how an
expected one is declared."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sofamesh.testing import ProxyFailed, crash_reports, log_problems, no_logged_tracebacks

LOG = """\
2026-01-02 10:00:00,001 INFO sofamesh: serving web=127.0.0.1:8080
2026-01-02 10:00:01,002 ERROR asyncio: Fatal error on transport TCPTransport
protocol: <DownstreamConnection>
Traceback (most recent call last):
  File "stream.py", line 1, in start
KeyError: 'a'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "stream.py", line 2, in start
ValueError: chained
2026-01-02 10:00:02,003 INFO sofamesh.server: shutdown: every in-flight request finished
Exception ignored in: <function Pool.__del__ at 0x1>
Traceback (most recent call last):
  File "pool.py", line 3, in __del__
RuntimeError: gone
sofamesh: stopped; 0 in-flight request(s) cut
"""


def test_a_chained_traceback_and_an_ignored_exception_are_two_reports_each_with_its_record() -> None:
    first, second = crash_reports(LOG)
    assert first.startswith("2026-01-02 10:00:01,002 ERROR asyncio: Fatal error on transport")
    assert first.endswith("ValueError: chained") and "KeyError: 'a'" in first
    assert second.startswith("Exception ignored in: <function Pool.__del__")
    assert second.endswith("RuntimeError: gone")


def test_a_clean_log_and_exit_zero_is_no_problem_and_warnings_do_not_count() -> None:
    log = "2026-01-02 10:00:00,001 WARNING sofamesh: upstream 127.0.0.1:1 refused\nsofamesh: stopped\n"
    assert log_problems(log, 0) == []


def test_an_undeclared_traceback_a_missing_declared_one_and_a_wrong_exit_are_each_named() -> None:
    assert log_problems(LOG, 0, expect_tracebacks=["ValueError: chained", "RuntimeError: gone"]) == []
    problems = log_problems(LOG, -9, expect_tracebacks=["ValueError: chained", "OSError"])
    assert problems[0] == "the proxy was killed by signal 9, expected exit 0"
    assert problems[1].startswith("the proxy logged an unhandled exception:\nException ignored in")
    assert problems[2] == "the proxy logged no traceback containing 'OSError', as the test expected"
    assert len(problems) == 3
    assert log_problems("", None) == ["the proxy was still running when it was checked"]


def test_an_exception_in_a_loop_callback_fails_an_in_process_block_unless_declared() -> None:
    def boom() -> None:
        raise RuntimeError("callback boom")

    async def main() -> None:
        asyncio.get_running_loop().call_soon(boom)
        await asyncio.sleep(0.01)

    with pytest.raises(ProxyFailed, match="RuntimeError: callback boom"):
        with no_logged_tracebacks():
            asyncio.run(main())
    with no_logged_tracebacks(expect=["RuntimeError: callback boom"]) as reports:
        asyncio.run(main())
    assert len(reports) == 1 and reports[0].startswith("ERROR asyncio: Exception in callback")
    with pytest.raises(ProxyFailed, match="no traceback containing 'callback boom'"):
        with no_logged_tracebacks(expect=["callback boom"]):
            logging.getLogger("sofamesh").error("an error without an exception is not a traceback")
