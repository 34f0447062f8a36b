"""docs/writing-plugins.md: its hook reference matches the hookspecs, and its public-API table is
what the contrib distributions (and the tutorial) keep to."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from sofamesh import hookspecs

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "writing-plugins.md"


def _reference() -> dict[str, str]:
    text = DOC.read_text().split("## Hook reference", 1)[1]
    parts = re.split(r"^### (\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _hookspecs() -> list[tuple[str, list[str], str]]:
    out = []
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("sofamesh_"):
            doc = inspect.getdoc(fn) or ""
            added = re.search(r"versionadded::\s*([\d.]+)", doc)
            out.append((name, list(inspect.signature(fn).parameters), added.group(1) if added else "?"))
    return out


@pytest.mark.parametrize(("hook", "args", "added"), _hookspecs(), ids=[h[0] for h in _hookspecs()])
def test_the_hook_reference_names_each_hook_its_arguments_and_its_version(hook: str, args: list[str], added: str) -> None:
    ref = _reference()
    assert hook in ref, f"docs/writing-plugins.md: no '### {hook}' under '## Hook reference'"
    signature = "`(" + ", ".join(args) + ")`"
    assert ref[hook].lstrip().startswith(signature), f"'### {hook}' should start with {signature}"
    assert f"since {added}." in ref[hook], f"'### {hook}' should say 'since {added}.'"
    for arg in args:
        assert f"- `{arg}`:" in ref[hook], f"'### {hook}' does not describe argument `{arg}`"


def test_the_hook_reference_documents_no_hook_that_does_not_exist() -> None:
    assert set(_reference()) == {h[0] for h in _hookspecs()}


def public_api() -> dict[str, set[str]]:
    """The table under 'What a plugin may import': module -> the names its __all__ exports."""
    section = DOC.read_text().split("## What a plugin may import", 1)[1].split("\n## ", 1)[0]
    modules = re.findall(r"^\| `(sofamesh[\w.]*)` \|", section, flags=re.M)
    assert modules, "no module table found"
    return {m: set(getattr(importlib.import_module(m), "__all__", ())) for m in modules}


def test_every_module_in_the_public_api_table_declares_what_it_exports() -> None:
    for module, names in public_api().items():
        assert names, f"{module} has no __all__: its public names are not declared"


def _sofamesh_imports(path: Path) -> list[tuple[str, str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sofamesh":
            out.extend((node.module, a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "sofamesh")
    return out


CONTRIB_FILES = sorted(p for p in (ROOT / "contrib").glob("*/**/*.py") if "build" not in p.parts)


@pytest.mark.parametrize("path", CONTRIB_FILES, ids=[str(p.relative_to(ROOT)) for p in CONTRIB_FILES])
def test_contrib_code_imports_only_the_public_plugin_api(path: Path) -> None:
    api = public_api()
    for module, name, line in _sofamesh_imports(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        assert module in api, f"{where}: imports {module}, which is not in the public plugin API table"
        if name:
            assert name in api[module], f"{where}: {module}.{name} is not in {module}.__all__"
