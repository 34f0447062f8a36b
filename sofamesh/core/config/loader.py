"""YAML -> ProxyConfig. Every error names its YAML path and the bad value."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sofamesh.core.config.model import ProxyConfig
from sofamesh.core.config.yaml_text import safe_load
from sofamesh.core.errors import ConfigError, ConfigErrors


def yaml_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's ``loc`` -> ``listeners[0].routes[2].cluster``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"str", "list[str]", "function-before[_plain(), EndpointConfig]"} or "[" in str(part):
            continue  # union-branch labels pydantic adds; they are not YAML keys
        else:
            out += f".{part}" if out else str(part)
    return out


def _value_at(data: Any, loc: tuple[int | str, ...]) -> Any:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def parse_yaml(text: str, source: str = "<config>") -> dict[str, Any]:
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigErrors([ConfigError("", f"{source}: not valid YAML{where}: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError("", f"{source}: the top level must be a mapping, "
                                            f"got {type(data).__name__}")])
    return data


def from_mapping(data: Mapping[str, Any]) -> ProxyConfig:
    """Validate a mapping; raise ``ConfigErrors`` with every problem found."""
    try:
        return ProxyConfig.model_validate(dict(data))
    except ValidationError as exc:
        errors: list[ConfigError] = []
        seen: set[str] = set()
        for err in exc.errors():
            loc = tuple(err["loc"])
            path = yaml_path(loc)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            else:
                bad = _value_at(data, tuple(p for p in loc if yaml_path((p,)) or isinstance(p, int)))
                if bad is not None and not isinstance(bad, dict | list) and repr(bad) not in msg:
                    msg = f"{msg} (got {bad!r})"
            line = f"{path}: {msg}"
            if line not in seen:
                seen.add(line)
                errors.append(ConfigError(path, msg))
        raise ConfigErrors(errors) from None


def load_text(text: str, source: str = "<config>") -> ProxyConfig:
    return from_mapping(parse_yaml(text, source))


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's YAML as a mapping, not validated yet."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read config file {str(p)!r}: {exc.strerror}")]) from None
    return parse_yaml(text, str(p))


def load_file(path: str | Path) -> ProxyConfig:
    return from_mapping(read_mapping(path))


__all__ = ["from_mapping", "load_file", "load_text", "parse_yaml", "read_mapping", "yaml_path"]
