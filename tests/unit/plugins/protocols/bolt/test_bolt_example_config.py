"""The Bolt sidecar example config is valid for the installed plugins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[5] / "examples" / "bolt-sidecar.yaml"


def test_the_bolt_sidecar_example_passes_check_config() -> None:
    out = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(EXAMPLE)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_check_config_names_a_misspelt_bolt_protocol(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("protocols: [bolt]", "protocols: [blot]"))
    out = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "listeners[0].protocols" in out.stderr and "'blot'" in out.stderr and "bolt" in out.stderr
