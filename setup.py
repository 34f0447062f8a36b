"""Build hook for the optional compiled build.

``pip install .`` builds the pure-Python package, exactly as pyproject.toml describes it. With
``SOFAMESH_MYPYC=1`` set at build time the hot-path modules listed in ``COMPILED`` are also compiled
to C extensions with mypyc (the typed Python stays the source; the ``.py`` files ship alongside).
That needs mypy and a C compiler at build time only: ``pip install mypy`` then
``SOFAMESH_MYPYC=1 pip install --no-build-isolation .`` (see scripts/build-mypyc.sh).
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

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
    "sofamesh/plugins/protocols/http2/codec.py",
    "sofamesh/plugins/protocols/http2/native_codec.py",
]


def _ext_modules() -> list[object]:
    if os.environ.get("SOFAMESH_MYPYC", "") not in ("1", "true", "yes"):
        return []
    if {"egg_info", "dist_info"} & set(sys.argv):
        return []  # metadata only (pip asks first): no need to type-check and generate C for it
    if "editable_wheel" in sys.argv:
        # The extensions would land next to the sources and shadow every later edit of them.
        raise SystemExit("SOFAMESH_MYPYC=1: the compiled build is not editable; use 'pip install .' "
                         "(scripts/build-mypyc.sh), or unset SOFAMESH_MYPYC for 'pip install -e .'")
    try:
        from mypyc.build import mypycify  # build-time only: mypy is not a runtime dependency
    except ImportError:
        raise SystemExit("SOFAMESH_MYPYC=1 needs mypy where the package is built: 'pip install mypy', "
                         "then 'pip install --no-build-isolation .' (or scripts/build-mypyc.sh)") from None

    only = os.environ.get("SOFAMESH_MYPYC_MODULES")  # comma-separated subset, for experiments
    modules = [m for m in COMPILED if not only or m in only.split(",")]
    return list(mypycify(modules, opt_level=os.environ.get("SOFAMESH_MYPYC_OPT", "3")))


setup(ext_modules=_ext_modules())
