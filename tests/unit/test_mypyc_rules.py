"""Rules the modules in setup.py's ``COMPILED`` must follow that mypy does not check but mypyc
miscompiles silently (found by running the HTTP/2 tests on the compiled build).

One exception-handler name, one exception type per function: mypyc gives ``except A as exc`` and a
later ``except B as exc`` in the same function one variable typed ``A``, so catching a ``B`` raises
``TypeError: A object expected; got B`` instead of running the handler (mypy 2.4.1's mypyc).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def compiled_paths() -> list[Path]:
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets):
            return [REPO / p for p in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no COMPILED list")


def reused_handler_names(source: str) -> list[str]:
    """``function: name`` for each function that binds one handler name to different exception types."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        types: dict[str, set[str]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                types.setdefault(node.name, set()).add(ast.unparse(node.type))
        found += [f"{fn.name}: {name} {sorted(ts)}" for name, ts in types.items() if len(ts) > 1]
    return found


def test_the_check_finds_a_reused_handler_name() -> None:
    source = "def f():\n    try:\n        g()\n    except KeyError as e:\n        pass\n    except OSError as e:\n        pass\n"
    assert reused_handler_names(source) == ["f: e ['KeyError', 'OSError']"]
    assert reused_handler_names(source.replace("OSError as e", "OSError as err")) == []


def test_no_compiled_module_reuses_an_exception_handler_name_for_another_type() -> None:
    paths = compiled_paths()
    assert len(paths) > 30
    found = {str(p.relative_to(REPO)): names for p in paths if (names := reused_handler_names(p.read_text()))}
    assert found == {}
