"""The tutorial in docs/writing-plugins.md works as written: its files are extracted into a
distribution (a dist-info on PYTHONPATH, which is what `pip install` leaves), `sofamesh plugins`
lists it, and the tutorial's own tests pass through a running proxy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "writing-plugins.md"


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tutorial")
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", DOC.read_text(), flags=re.S)
    assert {name for name, _ in blocks} >= {"pyproject.toml", "src/acme_tutorial/frame.py",
                                            "src/acme_tutorial/deny.py", "tests/test_acme_tutorial.py"}
    for name, text in blocks:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    info = root / "src" / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    eps = project["entry-points"]["sofamesh.plugins"]
    (info / "entry_points.txt").write_text("[sofamesh.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return root


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root / "src")}


def test_sofamesh_plugins_lists_the_tutorial_distribution(tutorial: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sofamesh", "plugins"], capture_output=True, text=True, timeout=60,
                         env=_env(tutorial))
    rows = {tuple(line.split()[:4]) for line in out.stdout.splitlines()[1:]}
    assert ("acme.frame", "protocol", "acme-tutorial", "0.1.0") in rows, out.stdout + out.stderr
    assert ("acme.deny", "filter", "acme-tutorial", "0.1.0") in rows


def test_the_tutorials_own_tests_pass_through_a_running_proxy(tutorial: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tutorial,
                         capture_output=True, text=True, timeout=120, env=_env(tutorial))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
