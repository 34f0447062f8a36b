"""Config validation: every error names its YAML path and the bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sofamesh.core.build import proxy_host
from sofamesh.core.config.check import resolve
from sofamesh.core.config.loader import load_text
from sofamesh.core.errors import ConfigErrors


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        cfg = load_text(text)
        resolve(cfg, proxy_host())
    return [str(e) for e in info.value.errors]


def test_bad_yaml_names_line_and_column() -> None:
    (err,) = errors_of("listeners:\n  - address: [oops\n")
    assert "not valid YAML at line 3" in err or "not valid YAML at line 2" in err


def test_shape_errors_name_paths_and_values() -> None:
    errs = errors_of("""
listeners:
  - address: "127.0.0.1:99999"
    routes:
      - match: {path: {prefix: /a, exact: /b}}
        cluster: x
      - match: {}
    colour: blue
clusters:
  - name: a
    endpoints: ["nohost", {address: "127.0.0.1:1", weight: 0}]
""")
    assert "listeners[0].address: address '127.0.0.1:99999': port '99999' is not 0..65535" in errs
    assert "listeners[0].routes[0].match.path: give exactly one of exact, prefix, suffix, regex (got ['exact', 'prefix'])" in errs
    assert "listeners[0].routes[1]: give exactly one of cluster or weighted_clusters" in errs
    assert "listeners[0].colour: unknown key" in errs
    assert "clusters[0].endpoints[0].address: address 'nohost' is not HOST:PORT" in errs
    assert any(e.startswith("clusters[0].endpoints[1].weight: Input should be greater than or equal to 1") for e in errs)


def test_unknown_cluster_lists_the_known_ones() -> None:
    errs = errors_of("""
listeners:
  - address: "127.0.0.1:1"
    protocols: [http1]
    routes: [{cluster: order}, {cluster: user}, {cluster: pay}]
clusters: [{name: order}, {name: user}]
""")
    assert errs == ["listeners[0].routes[2].cluster: unknown cluster 'pay' (known: order, user)"]


def test_unknown_plugin_names_are_errors_at_their_paths() -> None:
    errs = errors_of("""
listeners:
  - address: "127.0.0.1:1"
    protocols: [http1, blot]
    filters: [{type: authz.rbca}]
    routes: [{cluster: a}]
clusters: [{name: a, lb: round_robn}]
""")
    assert "clusters[0].lb: unknown load balancer 'round_robn' (known: random, round_robin)" in errs
    assert any(e.startswith("listeners[0].protocols[1]: unknown protocol 'blot' (known: ") and "http1" in e for e in errs)
    assert any(e.startswith("listeners[0].filters[0].type: unknown filter 'authz.rbca'") for e in errs)


def test_plugins_and_extensions_must_name_installed_plugins() -> None:
    errs = errors_of("""
listeners: []
plugins: [nope]
extensions: {mesh_app_api: {}, alsonope: {a: 1}}
""")
    assert [e.split(" (installed:")[0] for e in errs] == [
        "plugins.nope: no installed plugin 'nope'", "extensions.alsonope: no installed plugin 'alsonope'"]


def test_a_plugin_name_of_the_wrong_kind_is_refused() -> None:
    errs = errors_of("""
listeners: [{address: "127.0.0.1:1", protocols: [round_robin], routes: [{cluster: a}]}]
clusters: [{name: a}]
""")
    assert len(errs) == 1 and errs[0].startswith("listeners[0].protocols[0]: unknown protocol 'round_robin'")


def test_duplicates_are_reported() -> None:
    errs = errors_of("""
listeners:
  - {name: l, address: "127.0.0.1:1", protocols: [http1], routes: [{cluster: a}]}
  - {name: l, address: "127.0.0.1:1", protocols: [http1], routes: [{cluster: a}]}
clusters: [{name: a}, {name: a}]
""")
    assert "clusters[1].name: duplicate cluster name 'a'" in errs
    assert "listeners[1].name: duplicate listener name 'l'" in errs
    assert "listeners[1].address: address '127.0.0.1:1' is used twice" in errs


def test_check_config_prints_every_error_and_exits_non_zero(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("listeners: [{address: '127.0.0.1:1', protocols: [http1], routes: [{cluster: pay}]}]\n"
                 "clusters: [{name: order, lb: nope}]\n")
    out = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "error: clusters[0].lb: unknown load balancer 'nope'" in out.stderr
    assert "error: listeners[0].routes[0].cluster: unknown cluster 'pay' (known: order)" in out.stderr
    assert f"{f}: 2 error(s)" in out.stderr


def test_check_config_reports_field_name_and_filter_config_errors_in_one_pass(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("""
listeners:
  - address: "127.0.0.1:99999"
    protocols: [http1, blot]
    filters: [{type: authz.rbca}, {type: quota.local, config: {rate: -1}}, {type: 7}]
    routes:
      - {cluster: pay, timeout_ms: -1}
      - {cluster: order, colour: blue}
clusters:
  - {name: order, lb: nope, connect_timeout_ms: 0}
  - {name: order}
""")
    out = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(f)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    errors = [line.removeprefix("error: ") for line in out.stderr.splitlines() if line.startswith("error: ")]
    expected = [
        # fields
        "listeners[0].address: address '127.0.0.1:99999': port '99999' is not 0..65535",
        "listeners[0].filters[2].type: Input should be a valid string (got 7)",
        "listeners[0].routes[0].timeout_ms: Input should be greater than or equal to 0 (got -1)",
        "listeners[0].routes[1].colour: unknown key",
        "clusters[0].connect_timeout_ms: Input should be greater than 0",
        # names, found beside the field errors (also inside the listener, route and cluster that have one)
        "clusters[1].name: duplicate cluster name 'order'",
        "clusters[0].lb: unknown load balancer 'nope' (known: random, round_robin)",
        "listeners[0].filters[0].type: unknown filter 'authz.rbca'",
        "listeners[0].routes[0].cluster: unknown cluster 'pay' (known: order)",
        # a filter's own config
        "listeners[0].filters[1].config.limit.rate: Input should be greater than 0",
    ]
    for e in expected:
        assert any(line.startswith(e) for line in errors), (e, errors)
    assert any(line.startswith("listeners[0].protocols[1]: unknown protocol 'blot'") for line in errors), errors
    assert len(errors) == len(expected) + 1, errors
    assert f"{f}: {len(errors)} error(s)" in out.stderr


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).parents[3] / "examples" / "proxy.yaml"
    out = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(example)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_proxy_with_a_missing_file_says_which_file(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sofamesh", "proxy", "-c", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "cannot read config file" in out.stderr and "nope.yaml" in out.stderr
