"""Reading a filter's YAML ``config`` into a typed model, with errors that name the YAML path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sofamesh.core.errors import ConfigError, ConfigErrors

M = TypeVar("M", bound=BaseModel)


class Settings(BaseModel):
    """Base of filter config models: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def parse(model: type[M], config: Mapping[str, Any], path: str) -> M:
    """``model`` validated from ``config``; raises ``ConfigError(s)`` at ``<path>.config.<key>``."""
    try:
        return model.model_validate(dict(config))
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
            errors.append(ConfigError(f"{path}.config{loc}", e["msg"]))
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigErrors(errors) from None


__all__ = ["Settings", "parse"]
