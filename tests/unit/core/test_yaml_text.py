"""The YAML loading shared by the proxy's config, Pilot's config and policy: libyaml's C loader
when PyYAML has it, the same values and the same line / column in errors as the pure loader."""

from __future__ import annotations

import pytest
import yaml

from sofamesh.core.config import yaml_text
from sofamesh.core.config.loader import parse_yaml
from sofamesh.core.errors import ConfigErrors
from sofamesh.pilot.policy.documents import parse_stream

TEXTS = [
    "listeners:\n  - address: 127.0.0.1:0\n    routes: [{cluster: a}]\n",
    "a: 1\n---\nb: [1, 2.5, true, null, ~, 0x1f, 2024-05-01T00:00:00Z]\n",
    "anchors: &x {k: v}\nuse: *x\nbin: !!binary aGk=\n",
]
BAD = ["listeners:\n  - address: [oops\n", "a: b\n\tc: d\n", "a: 1\n---\nb: [\n", "k: 'unterminated\n"]


def test_the_c_loader_is_used_when_pyyaml_has_libyaml() -> None:
    assert yaml_text.LIBYAML == yaml.__with_libyaml__
    loader = yaml_text.safe_loader("a: 1")
    try:
        assert isinstance(loader, yaml.CSafeLoader) == yaml.__with_libyaml__
    finally:
        loader.dispose()


@pytest.mark.parametrize("text", TEXTS)
def test_values_are_those_of_the_pure_loader(text: str) -> None:
    assert list(yaml_text.safe_load_all(text)) == list(yaml.load_all(text, Loader=yaml.SafeLoader))


@pytest.mark.parametrize("text", BAD)
def test_errors_carry_the_pure_loaders_line_and_column(text: str) -> None:
    def mark(load: object) -> tuple[int, int]:
        with pytest.raises(yaml.YAMLError) as info:
            list(load(text))  # type: ignore[operator]
        m = info.value.problem_mark  # type: ignore[attr-defined]
        return m.line, m.column

    assert mark(yaml_text.safe_load_all) == mark(lambda t: yaml.load_all(t, Loader=yaml.SafeLoader))


def test_a_config_error_names_line_and_column() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_yaml("listeners:\n  - address: [oops\n", "x.yaml")
    assert "x.yaml: not valid YAML at line 3, column 1" in str(info.value)


def test_a_lone_surrogate_is_refused_with_its_position_not_an_encoding_error() -> None:
    """libyaml takes UTF-8; text that has none falls back to the pure loader, which names it."""
    with pytest.raises(yaml.YAMLError, match="unacceptable character #xd800"):
        yaml_text.safe_load("a: \ud800\n")
    [doc] = list(parse_stream("kind: VirtualService\nmetadata: {name: \ud800}\n"))
    assert doc.body is None and doc.problem is not None and "#xd800" in doc.problem
