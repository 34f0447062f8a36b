"""Safe YAML parsing with PyYAML's C loader (libyaml) when the installed PyYAML has it.

libyaml parses about ten times faster than PyYAML's pure-Python reader and scanner; both build the
same Python values (the constructor is the same ``SafeConstructor``) and their errors carry the
same ``problem_mark`` (line and column) and ``problem`` wording for what they refuse. Text libyaml
cannot take (a lone surrogate, which has no UTF-8 encoding) falls back to the pure-Python loader,
which refuses it naming its position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

LIBYAML: bool = bool(getattr(yaml, "__with_libyaml__", False))


def safe_loader(text: str) -> yaml.SafeLoader:
    """A safe loader over ``text`` (call ``dispose()`` when done)."""
    if LIBYAML:
        try:
            return yaml.CSafeLoader(text)  # type: ignore[return-value]  # the same loader API
        except UnicodeEncodeError:
            pass
    return yaml.SafeLoader(text)


def safe_load(text: str) -> Any:
    """The single document of ``text`` (``None`` when it is empty), as ``yaml.safe_load``."""
    loader = safe_loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def safe_load_all(text: str) -> Iterator[Any]:
    """Every document of ``text``, as ``yaml.safe_load_all``."""
    loader = safe_loader(text)
    try:
        while loader.check_data():  # type: ignore[no-untyped-call]
            yield loader.get_data()
    finally:
        loader.dispose()


__all__ = ["LIBYAML", "safe_load", "safe_load_all", "safe_loader"]
