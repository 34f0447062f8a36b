"""What the idle RSS of a sidecar is made of: the dependencies' floor, then sofamesh's modules.

usage: python benchmarks/memory_floor.py [--python PYTHON] [--runs N]

Each row is a fresh interpreter that loads what the rows above it loaded plus its own step, then
collects garbage and gives its free C heap back (``malloc_trim(0)``, as a started sidecar does) and
reads its VmRSS; medians of ``--runs`` runs. The last row imports every sofamesh module a sidecar
holds once started with ``benchmarks/memory.py``'s typical config (found by starting one). What a
started sidecar adds to that last row is its built config (validators, models, listeners, clusters):
``benchmarks/memory.py`` measures the whole. Run from bytecode, as the sidecar measured by
``memory.py`` is (an unmeasured first pass writes it to this run's cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory

_HELD = textwrap.dedent(
    """
    import asyncio, json, sys
    from sofamesh import cli
    cli.build_parser()
    from sofamesh.core.config.loader import from_mapping
    from sofamesh.core.net import loop
    from sofamesh.core.server import Server

    async def main():
        server = Server(from_mapping(json.loads(sys.argv[1])))
        await server.start(None, None)
        held = sorted(m for m in sys.modules if m == "sofamesh" or m.startswith("sofamesh."))
        await server.shutdown()
        print(json.dumps(held))

    loop.run(main())
    """
)

_MODEL = textwrap.dedent(
    """
    from pydantic import BaseModel, ConfigDict
    class A(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
        x: int = 1
    """
)


def steps(held: list[str]) -> list[tuple[str, str]]:
    return [
        ("Python 3.11 (with ctypes, to trim the heap)", "pass"),
        ("+ ssl (libssl, libcrypto): asyncio imports it", "import ssl"),
        ("+ asyncio", "import asyncio"),
        ("+ uvloop, one loop run", "import uvloop; uvloop.run(asyncio.sleep(0))"),
        ("+ argparse, logging, json, ipaddress, urllib.parse", "import argparse, logging, json, ipaddress, urllib.parse"),
        ("+ PyYAML (libyaml)", "import yaml"),
        ("+ pydantic-core", "import pydantic_core"),
        ("+ pydantic, one small model defined", _MODEL),
        ("+ importlib.metadata (pydantic's plugin loader imports it with the first validator)",
         "import importlib.metadata"),
        ("+ that model's validator built and used", "A.model_validate({'x': 2})"),
        ("+ pluggy, stevedore", "import pluggy, stevedore.named"),
        (f"+ the {len(held)} sofamesh modules a started sidecar holds",
         f"import importlib\nfor m in {held!r}: importlib.import_module(m)"),
    ]


_PRE = "import ctypes, gc\n_trim = ctypes.CDLL('libc.so.6').malloc_trim\n"
_POST = "\ngc.collect(); _trim(0)\nprint(int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]))\n"


_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # the first pass writes bytecode


def rss_kb(python: str, flags: list[str], code: str) -> int:
    out = subprocess.run([python, *flags, "-P", "-c", _PRE + code + _POST], capture_output=True, text=True,
                         timeout=120, env=_ENV)
    if out.returncode:
        raise SystemExit(f"{python}: {out.stderr[-2000:]}")
    return int(out.stdout.split()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="the interpreter measured (e.g. the compiled build's)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sofamesh-floor-") as tmp:
        flags = ["-X", f"pycache_prefix={tmp}"]
        config = memory.typical_config(memory.bench.free_port())
        out = subprocess.run([args.python, *flags, "-P", "-c", _HELD, json.dumps(config)], capture_output=True,
                             text=True, timeout=120, env=_ENV)
        if out.returncode:
            raise SystemExit(f"the sidecar did not start: {out.stderr[-2000:]}")
        held = json.loads(out.stdout.strip().splitlines()[-1])
        rows = steps(held)
        code = "".join(step + "\n" for _, step in rows)
        rss_kb(args.python, flags, code)  # writes the bytecode the measured runs read
        print(f"{args.python}: idle RSS, cumulative, MB (median of {args.runs})\n")
        print("| what is loaded | RSS MB | added MB |")
        print("|---|---:|---:|")
        prev, body = 0, ""
        for label, step in rows:
            body += step + "\n"
            kb = statistics.median(rss_kb(args.python, flags, body) for _ in range(args.runs))
            print(f"| {label} | {kb / 1024:.1f} | {'+' if prev else ''}{(kb - prev) / 1024:.1f} |", flush=True)
            prev = kb
    return 0


if __name__ == "__main__":
    sys.exit(main())
