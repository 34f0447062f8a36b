"""The build backend of sofamesh: setuptools' own, plus what the compiled build needs to build.

``python -m build`` (or ``pip install .``, ``pip wheel .``) makes a wheel whose hot-path modules
are compiled by mypyc (setup.py ``COMPILED``) wherever a C compiler and the Python headers exist,
as black and mypy ship theirs; elsewhere it makes the pure-Python wheel and says why.
``SOFAMESH_MYPYC=0`` asks for the pure wheel, ``SOFAMESH_MYPYC=1`` for the compiled one or an error.
An editable install (``pip install -e .``) is always pure: compiled modules next to the sources
would shadow every later edit.

For a compiled wheel the isolated build environment also gets mypy (the compiler, pinned) and what
mypyc type-checks the compiled modules against: the runtime dependencies and their stubs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import sofamesh_compile
from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the rest of PEP 517 / 660 is setuptools' own)
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

MYPY_VERSION = sofamesh_compile.MYPY_VERSION


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    if sofamesh_compile.wanted(quiet=True):
        project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
        requires += [f"mypy=={MYPY_VERSION}", "types-PyYAML", *project["dependencies"]]
    return requires
