"""Run one fuzz target under atheris (libFuzzer): ``python -m fuzz.run TARGET [libFuzzer flags]``.

The corpus directory (default ``.cache/fuzz/TARGET``) is seeded from captured frames first;
crashes are written to ``fuzz/crashes/TARGET/`` (each becomes a regression test:
tests/fuzz/test_fuzz_targets.py replays them). Flags are libFuzzer's: ``-max_total_time=S``,
``-runs=N``, ``-timeout=S`` (per input), ``-rss_limit_mb=MB``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit("usage: python -m fuzz.run TARGET [libFuzzer flags]")
    name, flags = argv[1], argv[2:]
    with atheris.instrument_imports(include=["sofamesh", "sofamesh_thrift"]):
        from fuzz.targets import TARGETS
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r} (known: {', '.join(TARGETS)})")
    from fuzz.seeds import write

    corpus = write(name, Path(os.environ.get("FUZZ_CORPUS", ROOT / ".cache" / "fuzz" / name)))
    crashes = ROOT / "fuzz" / "crashes" / name
    crashes.mkdir(parents=True, exist_ok=True)
    defaults = ["-timeout=5", "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={crashes}/"]
    atheris.Setup([argv[0], *defaults, *flags, str(corpus)], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
