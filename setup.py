"""Build hook for the compiled build.

``pip install .`` and ``python -m build`` build the hot-path modules listed in ``COMPILED`` as C
extensions with mypyc (the typed Python stays the source; the ``.py`` files ship alongside)
wherever a C compiler and the Python headers exist, else the pure-Python package with a message
saying why (``SOFAMESH_MYPYC``: ``1`` compile or fail, ``0`` pure, ``auto`` by default; see
scripts/packaging/sofamesh_compile.py). The build backend (scripts/packaging/sofamesh_build.py)
puts mypy in the isolated build environment when it compiles; ``pip install -e .`` is always pure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts" / "packaging"))
import sofamesh_compile

# The codecs and the per-request stream path. Everything else (config, Pilot, admin, filters,
# plugins' glue) stays interpreted: it runs once per connection or per reload, not per request.
COMPILED = [
    "sofamesh/core/headers.py",
    "sofamesh/core/buffer.py",
    "sofamesh/core/events.py",
    "sofamesh/core/codec.py",
    "sofamesh/core/stats.py",
    "sofamesh/core/hessian/values.py",
    "sofamesh/core/hessian/reader.py",
    "sofamesh/core/hessian/writer.py",
    "sofamesh/core/hessian/draft.py",
    "sofamesh/core/endpoint.py",
    "sofamesh/core/net/timers.py",
    "sofamesh/core/net/flow_control.py",
    "sofamesh/core/net/connection.py",
    "sofamesh/core/proxy/context.py",
    "sofamesh/core/proxy/filter_chain.py",
    "sofamesh/core/proxy/router.py",
    "sofamesh/core/proxy/runtime.py",
    "sofamesh/core/proxy/stream.py",
    "sofamesh/core/proxy/stream_manager.py",
    "sofamesh/core/upstream/cluster.py",
    "sofamesh/core/upstream/pool.py",
    "sofamesh/plugins/protocols/bolt/frames.py",
    "sofamesh/plugins/protocols/bolt/hessian.py",
    "sofamesh/plugins/protocols/bolt/codec.py",
    "sofamesh/plugins/protocols/dubbo/frames.py",
    "sofamesh/plugins/protocols/dubbo/codec.py",
    "sofamesh/plugins/protocols/http1/frames.py",
    "sofamesh/plugins/protocols/http1/codec.py",
    "sofamesh/plugins/protocols/http2/huffman.py",
    "sofamesh/plugins/protocols/http2/hpack_codec.py",
    "sofamesh/plugins/protocols/http2/frames.py",
    "sofamesh/plugins/protocols/http2/machine.py",
    "sofamesh/plugins/protocols/http2/fields.py",
    "sofamesh/plugins/protocols/http2/grpc.py",
    "sofamesh/plugins/protocols/http2/events.py",
    "sofamesh/plugins/protocols/http2/codec.py",
]


def _ext_modules() -> list[object]:
    if {"egg_info", "dist_info", "sdist"} & set(sys.argv):
        return []  # metadata or sources only (pip asks first): no need to type-check and generate C for it
    mode = os.environ.get(sofamesh_compile.VARIABLE, "auto").strip().lower()
    if "editable_wheel" in sys.argv:
        if mode in ("1", "true", "yes"):
            # The extensions would land next to the sources and shadow every later edit of them.
            raise SystemExit("SOFAMESH_MYPYC=1: the compiled build is not editable; use 'pip install .' "
                             "(scripts/build-mypyc.sh), or unset SOFAMESH_MYPYC for 'pip install -e .'")
        return []
    if not sofamesh_compile.wanted():
        return []
    try:
        from mypyc.build import mypycify  # build-time only: mypy is not a runtime dependency
    except ImportError:
        if mode in ("auto", ""):
            print("sofamesh: building the pure-Python package, not the compiled one: mypy (mypyc) is not "
                  "installed where the package is built (a build without isolation)", file=sys.stderr)
            return []
        raise SystemExit("SOFAMESH_MYPYC=1 needs mypy where the package is built: 'pip install mypy', "
                         "then 'pip install --no-build-isolation .' (or scripts/build-mypyc.sh)") from None

    only = os.environ.get("SOFAMESH_MYPYC_MODULES")  # comma-separated subset, for experiments
    modules = [m for m in COMPILED if not only or m in only.split(",")]
    return list(mypycify(modules, opt_level=os.environ.get("SOFAMESH_MYPYC_OPT", "3")))


setup(ext_modules=_ext_modules())
