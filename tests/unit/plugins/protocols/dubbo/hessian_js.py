"""Drives npm hessian.js (EncoderV2) as an independent Hessian 2.0 encoder for the property tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parents[4]
NPM_DIR = Path(os.environ.get("SOFAMESH_CACHE", _REPO / ".cache")) / "npm" / "dubbo"
SCRIPT = _HERE / "hessian_js_encode.js"


def require_hessian_js() -> Path:
    """The node_modules holding hessian.js; skips locally, fails under CI, when it is missing."""
    modules = NPM_DIR / "node_modules"
    if shutil.which("node") is None or not (modules / "hessian.js" / "package.json").is_file():
        reason = (f"node and npm hessian.js are needed (run scripts/setup.d/21-dubbo-peers.sh; "
                  f"looked in {modules})")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return modules


class HessianJs:
    """One long-lived node process; ``encode(values)`` returns the stream and each value's end."""

    def __init__(self, modules: Path) -> None:
        env = dict(os.environ, NODE_PATH=str(modules))
        self._proc = subprocess.Popen(
            ["node", str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
        )

    def encode(self, values: list[object]) -> tuple[bytes, list[int]]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(values) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._proc.stdout.readline())
        if "error" in reply:
            raise AssertionError(f"hessian.js could not encode {values!r}: {reply['error']}")
        return bytes.fromhex(reply["hex"]), reply["ends"]

    def close(self) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc.stdout.close()
