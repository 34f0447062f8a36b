"""Every hookspec and every one of its arguments is documented in docs/plugins.md."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

from sofamesh import hookspecs

DOCS = Path(__file__).parents[2] / "docs" / "plugins.md"


def _modules() -> list[ModuleType]:
    mods = [hookspecs]
    try:
        from sofamesh.pilot import hookspecs as pilot_hookspecs
    except ImportError:
        return mods
    return [*mods, pilot_hookspecs]


def _specs() -> list[tuple[str, list[str]]]:
    out = []
    for mod in _modules():
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if name.startswith(("sofamesh_", "pilot_")):
                out.append((name, list(inspect.signature(fn).parameters)))
    return out


def _sections() -> dict[str, str]:
    text = DOCS.read_text()
    parts = re.split(r"^### (\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize(("hook", "args"), _specs(), ids=[s[0] for s in _specs()])
def test_hook_and_its_arguments_are_documented(hook: str, args: list[str]) -> None:
    sections = _sections()
    assert hook in sections, f"docs/plugins.md has no '### {hook}' section"
    for arg in args:
        assert f"`{arg}`" in sections[hook], f"docs/plugins.md '### {hook}' does not document argument `{arg}`"


def test_every_hookspec_has_a_contract_docstring() -> None:
    for mod in _modules():
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if name.startswith(("sofamesh_", "pilot_")):
                doc = inspect.getdoc(fn) or ""
                assert "versionadded" in doc, f"{name}: docstring lacks .. versionadded::"
