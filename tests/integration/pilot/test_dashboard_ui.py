"""Pilot's ``/ui`` in headless Chromium (Debian's ``chromium``, scripts/setup.d/45-browser.sh) over
a running ``sofamesh demo --dashboard``: the DOM after the page's JS ran shows the demo's services,
both sidecars with their xDS state, and calls flowing between them.

The screenshot is kept at ``<pytest tmp dir>/.../dashboard.png`` and, when ``SOFAMESH_ARTIFACTS``
names a directory (a CI artifact directory), also as ``$SOFAMESH_ARTIFACTS/dashboard.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from sofamesh.demo import SERVICES
from tests.integration.xds.mesh import wait_for


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        msg = "chromium is not installed (scripts/setup.d/45-browser.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class Rows(HTMLParser):
    """Every element with a ``data-*`` attribute, as (tag, attributes), and the text of ``#status``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, dict[str, str]]] = []
        self.cells: dict[tuple[str, str], str] = {}  # (proxy, xDS type) -> cell text
        self._cell: tuple[str, str] | None = None
        self._proxy = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if any(k.startswith("data-") for k in a):
            self.rows.append((tag, a))
        if "data-proxy" in a:
            self._proxy = a["data-proxy"]
        if tag == "td" and "data-type" in a:
            self._cell = (self._proxy, a["data-type"])
            self.cells[self._cell] = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self.cells[self._cell] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def values(self, attr: str) -> list[str]:
        return [a[attr] for _, a in self.rows if attr in a]


@pytest.fixture
def demo() -> Iterator[str]:
    """``sofamesh demo --dashboard`` in a subprocess; yields Pilot's API URL; stopped by its pid."""
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sofamesh", "demo", "--dashboard"],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:

        def url() -> str | None:
            out.seek(0)
            m = re.search(rb"dashboard at (http://127\.0\.0\.1:\d+)/ui", out.read())
            assert proc.poll() is None, "the demo exited"
            return m.group(1).decode() if m else None

        yield wait_for(url, 60, "the demo's dashboard address", interval=0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        out.seek(0)
        log = out.read().decode(errors="replace")
        out.close()
        assert proc.returncode == 0, log
        assert "0 failed" in log, log


def _browser(binary: str, *args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    # --virtual-time-budget: Chromium runs the page's timers and fetches until that much (virtual)
    # time has passed, then dumps or shoots; the page refreshes every 3 s, so it drew at least once.
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=8000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_dashboard_shows_the_demo_services_sidecars_and_live_calls(demo: str, tmp_path: Path) -> None:
    binary = chromium()
    # the call graph needs two scrapes of each sidecar with calls between them
    wait_for(
        lambda: (
            len([e for e in httpx.get(f"{demo}/debug/graph", timeout=10).json()["edges"] if e["rps"] > 0])
            >= len(SERVICES) * 2
        ),
        60,
        "every demo service called from both sidecars",
        interval=0.5,
    )
    dom = _browser(binary, "--dump-dom", f"{demo}/ui", profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr
    page = Rows()
    page.feed(dom.stdout)
    assert 'data-loaded="true"' in dom.stdout, dom.stdout[:2000]  # the page's JS ran and read Pilot
    assert set(SERVICES.values()) <= set(page.values("data-service"))
    assert {"demo-app-1", "demo-app-2"} <= set(page.values("data-proxy"))
    for proxy in ("demo-app-1", "demo-app-2"):
        for t in ("cds", "lds", "eds", "rds"):
            assert page.cells[(proxy, t)].startswith("SYNCED"), page.cells
    edges = [(a["data-source"], a["data-destination"], float(a["data-rps"])) for _, a in page.rows if "data-rps" in a]
    live = {(src, dst) for src, dst, rps in edges if rps > 0}
    assert {("demo-app-1", s) for s in SERVICES.values()} <= live, edges
    assert {("demo-app-2", s) for s in SERVICES.values()} <= live, edges

    shot = tmp_path / "dashboard.png"
    taken = _browser(
        binary, f"--screenshot={shot}", "--window-size=1280,1800", f"{demo}/ui", profile=tmp_path / "profile"
    )
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = os.environ.get("SOFAMESH_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "dashboard.png")
    print(f"dashboard screenshot: {shot}", file=sys.stderr)
