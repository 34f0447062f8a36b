"""Plugin discovery and loading, with real installed-distribution metadata (dist-info on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sofamesh.core.build import proxy_host
from sofamesh.core.catalog import Catalog, Provenance
from sofamesh.core.errors import ConfigError, PluginError


def make_dist(root: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Write a minimal installed distribution: ``<name>-<version>.dist-info`` plus modules."""
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[sofamesh.plugins]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))


FILTER_PLUGIN = """
    from sofamesh.core.plugin_host import hookimpl
    from sofamesh.core.proxy.filter_chain import Filter, FilterFactory

    class Hello(FilterFactory):
        def create(self, config, path):
            return Filter()

    @hookimpl
    def sofamesh_register_filters(catalog):
        catalog.add("acme.hello", Hello())
"""


def run(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_loading_by_name_imports_only_that_plugin() -> None:
    out = run(Path("/nonexistent"), "import sys\nfrom sofamesh.core.build import proxy_host\n"
              "h = proxy_host(); h.load(['http1'])\n"
              "print(sorted(m for m in sys.modules if m.startswith('sofamesh.plugins.')))")
    assert out.returncode == 0, out.stderr
    assert "sofamesh.plugins.protocols.http1.plugin" in out.stdout
    assert "tcp" not in out.stdout and "load_balancers" not in out.stdout


def test_unknown_plugin_name_lists_the_known_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown plugin 'htp1' \(known: .*http1.*round_robin"):
        proxy_host().load(["htp1"])


def test_two_distributions_registering_one_name_is_an_error_naming_both(tmp_path: Path) -> None:
    make_dist(tmp_path, "acme-dup", "2.0", {"http1": "acme_dup"}, {"acme_dup": ""})
    out = run(tmp_path, "from sofamesh.core.build import proxy_host\nproxy_host().available()")
    assert out.returncode != 0
    assert "plugin name 'http1'" in out.stderr
    assert "sofamesh 0.1.0" in out.stderr and "acme-dup 2.0" in out.stderr


def test_a_plugin_that_fails_to_import_names_its_distribution_and_the_exception(tmp_path: Path) -> None:
    make_dist(tmp_path, "acme-broken", "0.3", {"acme.broken": "acme_broken"},
              {"acme_broken": "raise RuntimeError('missing libfoo')\n"})
    out = run(tmp_path, "from sofamesh.core.build import proxy_host\nproxy_host().load(['acme.broken'])")
    assert out.returncode != 0
    assert "plugin 'acme.broken' from acme-broken 0.3" in out.stderr
    assert "RuntimeError: missing libfoo" in out.stderr


def test_a_third_party_filter_is_listed_and_usable_from_yaml(tmp_path: Path) -> None:
    make_dist(tmp_path, "acme-hello", "1.2", {"acme.hello": "acme_hello"}, {"acme_hello": FILTER_PLUGIN})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listeners:\n- address: 127.0.0.1:1\n  protocols: [http1]\n  filters: [{type: acme.hello}]\n"
                   "  routes: [{cluster: a}]\nclusters: [{name: a, endpoints: ['127.0.0.1:2']}]\n")
    out = run(tmp_path, "from sofamesh.cli import main\nimport sys\nsys.exit(main(['plugins']))")
    assert out.returncode == 0, out.stdout + out.stderr
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("acme.hello"))
    assert row == ["acme.hello", "filter", "acme-hello", "1.2"]
    out = run(tmp_path, f"from sofamesh.cli import main\nimport sys\nsys.exit(main(['check-config', '{cfg}']))")
    assert out.returncode == 0, out.stderr
    assert "ok (1 listener(s), 1 cluster(s))" in out.stdout


def test_one_catalog_name_added_by_two_plugins_names_both() -> None:
    cat: Catalog[object] = Catalog("filter")
    cat._set_source(Provenance("a", "dist-a", "1"))
    cat.add("x.y", object())
    cat._set_source(Provenance("b", "dist-b", "2"))
    with pytest.raises(PluginError, match=r"'x.y' is registered twice: by dist-a \(plugin a\) and by dist-b \(plugin b\)"):
        cat.add("x.y", object())


def test_catalog_lookup_error_names_the_path_and_the_known_names() -> None:
    cat: Catalog[object] = Catalog("filter")
    cat.add("authz.rbac", object())
    cat.add("authn.jwt", object())
    with pytest.raises(ConfigError) as info:
        cat.get("authz.rbca", "listeners[2].filters[0].type")
    assert str(info.value) == "listeners[2].filters[0].type: unknown filter 'authz.rbca' (known: authn.jwt, authz.rbac)"


def test_a_plugin_host_without_hookspecs_is_refused_naming_the_factories() -> None:
    from sofamesh.core.plugin_host import PluginHost

    with pytest.raises(TypeError, match=r"proxy_host\(\).*pilot_host\(\)"):
        PluginHost()
