"""Drives npm hessian.js (EncoderV2, DecoderV2) as an independent Hessian 2.0 encoder and decoder for
the property tests: one long-lived node process per direction, one JSON line per call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parents[3]
NPM_DIR = Path(os.environ.get("SOFAMESH_CACHE", _REPO / ".cache")) / "npm" / "dubbo"
ENCODE_SCRIPT = _HERE / "hessian_js_encode.js"
DECODE_SCRIPT = _HERE / "hessian_js_decode.js"


def require_hessian_js() -> Path:
    """The node_modules holding hessian.js; skips locally, fails under CI, when it is missing."""
    modules = NPM_DIR / "node_modules"
    if shutil.which("node") is None or not (modules / "hessian.js" / "package.json").is_file():
        reason = f"node and npm hessian.js are needed (run scripts/setup.d/21-dubbo-peers.sh; looked in {modules})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return modules


class HessianJs:
    """Two long-lived node processes: ``encode(values)`` returns the stream and each value's end;
    ``decode(stream, count)`` returns ``count`` values in hessian.js's typed JSON form."""

    def __init__(self, modules: Path) -> None:
        env = dict(os.environ, NODE_PATH=str(modules))
        self._procs = [
            subprocess.Popen(["node", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
            for script in (ENCODE_SCRIPT, DECODE_SCRIPT)
        ]

    def _ask(self, which: int, request: object) -> dict[str, Any]:
        proc = self._procs[which]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        reply: dict[str, Any] = json.loads(proc.stdout.readline())
        if "error" in reply:
            raise AssertionError(f"hessian.js failed on {request!r}: {reply['error']}")
        return reply

    def encode(self, values: list[object]) -> tuple[bytes, list[int]]:
        reply = self._ask(0, values)
        return bytes.fromhex(reply["hex"]), reply["ends"]

    def decode(self, stream: bytes, count: int) -> tuple[list[Any], int]:
        """``count`` values read from ``stream`` and the offset hessian.js stopped at."""
        reply = self._ask(1, {"hex": stream.hex(), "count": count})
        return reply["values"], reply["end"]

    def close(self) -> None:
        for proc in self._procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            proc.stdout.close()
