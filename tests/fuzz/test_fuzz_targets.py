"""The fuzz targets in CI: a short coverage-guided pass of each (atheris, a few seconds, bounded
per input and in memory), and every crash input ever found (fuzz/crashes/) replayed as a
regression test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.seeds import seeds
from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
PASS_S = 3  # seconds of fuzzing per target in CI; `make fuzz` runs longer

CRASHES = sorted(p for p in (ROOT / "fuzz" / "crashes").glob("*/*") if p.is_file())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_fuzz_pass_finds_no_crash(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz.run",
            target,
            f"-max_total_time={PASS_S}",
            "-timeout=5",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PASS_S + 60,
        env={**os.environ, "FUZZ_CORPUS": str(tmp_path / "corpus")},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    assert m and int(m.group(1)) > 0, out[-2000:]
    print(f"{target}: {m.group(1)} executions in {PASS_S} s")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_decodes_without_error(target: str) -> None:
    for s in seeds()[target]:  # every target has seeds
        TARGETS[target](s)


def test_every_crash_input_once_found_is_refused_cleanly() -> None:
    """fuzz/crashes/<target>/<input>: what a fuzz run once found, replayed after its fix."""
    for crash in CRASHES:
        TARGETS[crash.parent.name](crash.read_bytes())
