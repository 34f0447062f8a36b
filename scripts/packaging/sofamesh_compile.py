"""Whether this build compiles the hot-path modules with mypyc (shared by setup.py and the backend).

``SOFAMESH_MYPYC``: ``1`` compile (an error if that cannot be done), ``0`` pure Python, unset or
``auto`` compile when a C compiler and the Python headers are there, else build pure and say so.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

MYPY_VERSION = "2.4.1"  # the compiler; a build-time requirement only (scripts/build-mypyc.sh pins the same)
VARIABLE = "SOFAMESH_MYPYC"


def missing_toolchain() -> str | None:
    """What is missing to compile C extensions for this interpreter, or None."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc!r} is not on PATH; Debian: apt-get install gcc)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        return f"no Python headers ({include}/Python.h; Debian: apt-get install python3-dev)"
    return None


def wanted(quiet: bool = False) -> bool:
    """True when this build compiles; raises SystemExit when ``SOFAMESH_MYPYC=1`` cannot be met."""
    mode = os.environ.get(VARIABLE, "auto").strip().lower()
    if mode in ("0", "false", "no", "pure"):
        return False
    if mode not in ("1", "true", "yes", "auto", ""):
        raise SystemExit(f"{VARIABLE}={mode!r}: expected 1, 0 or auto")
    missing = missing_toolchain()
    if missing is None:
        return True
    if mode != "auto":
        raise SystemExit(f"{VARIABLE}=1 but the compiled build cannot be made here: {missing}")
    if not quiet:
        print(f"sofamesh: building the pure-Python package, not the compiled one: {missing}", file=sys.stderr)
    return False


if __name__ == "__main__":  # scripts/build-mypyc.sh: exit 3 and say what is missing, before building anything
    missing = missing_toolchain()
    if missing is not None:
        print(missing)
        sys.exit(3)
