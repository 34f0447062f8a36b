"""The contrib distributions, once installed (scripts/test installs them), show up in
``sofamesh plugins`` under their own distribution names and versions."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

CONTRIB = Path(__file__).parents[2] / "contrib"


def _projects() -> list[dict[str, object]]:
    out = []
    for toml in sorted(CONTRIB.glob("*/pyproject.toml")):
        project = tomllib.loads(toml.read_text())["project"]
        out.append(project)
    return out


@pytest.mark.parametrize("project", _projects(), ids=lambda p: str(p["name"]))
def test_an_installed_contrib_distribution_is_listed_with_its_version(project: dict[str, object]) -> None:
    name, version = str(project["name"]), str(project["version"])
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            raise AssertionError(f"{name} is not installed: scripts/test installs every contrib/*/ first") from None
        pytest.skip(f"{name} is not installed (pip install -e contrib/{name})")
    assert installed == version
    out = subprocess.run([sys.executable, "-m", "sofamesh", "plugins"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {tuple(line.split()[:4]) for line in out.stdout.splitlines()[1:] if line.strip()}
    entry_points = project["entry-points"]["sofamesh.plugins"]  # type: ignore[index]
    for plugin in entry_points:
        listed = [r for r in rows if r[0] == plugin]
        assert listed, f"{plugin} missing from `sofamesh plugins`:\n{out.stdout}"
        assert all(r[2:] == (name, version) for r in listed), listed
