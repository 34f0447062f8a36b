"""Applying policy to a Pilot process as a user does (``sofamesh apply -f``), and timing how long
the connected proxies take to follow it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.pilot.conftest import REPO

DATA = REPO / "tests" / "data"
BOOKINFO = DATA / "bookinfo"
AERAKI_DUBBO = DATA / "aeraki-dubbo"


def apply(api_url: str, *files: Path, stdin: str | None = None) -> float:
    """``sofamesh apply -f FILE`` for each file (or ``-`` with ``stdin``); the time it returned."""
    targets = [str(f) for f in files] if files else ["-"]
    for target in targets:
        done = subprocess.run([sys.executable, "-m", "sofamesh", "apply", "-f", target, "--pilot", api_url],
                              input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
    return time.monotonic()


def follows(check: Callable[[], bool], since: float, what: str, timeout: float = 5.0) -> float:
    """Poll ``check`` until it holds; the seconds from ``since`` (an apply's return) until it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic() - since
        time.sleep(0.01)
    raise AssertionError(f"{what}: not followed within {timeout} s")


def status(port: int, path: str, host: str = "web") -> int:
    """The status of ``GET path`` through the proxy listening on ``port`` (0 while nothing listens)."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}, timeout=5).status_code
    except httpx.HTTPError:
        return 0


__all__ = ["AERAKI_DUBBO", "BOOKINFO", "DATA", "apply", "follows", "status"]
