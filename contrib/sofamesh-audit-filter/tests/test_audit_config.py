"""acme.audit refuses a bad config with errors that name the YAML path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from acme_audit.filter import AuditFilterFactory, parse_settings

from sofamesh.core.errors import ConfigError


def test_defaults_audit_nothing_and_budget_nothing() -> None:
    s = parse_settings({}, "listeners[0].filters[0]")
    assert (s.tenant_header, s.default_tenant, s.calls, s.log, s.require_tenant) == ("x-tenant", "-", 0, None, False)


@pytest.mark.parametrize(("config", "where"), [
    ({"budgett": {}}, "listeners[0].filters[0].config.budgett: unknown key"),
    ({"budget": {"calls": "ten"}}, "listeners[0].filters[0].config.budget.calls: expected int, got 'ten'"),
    ({"budget": {"calls": 5, "window_s": 0}}, "listeners[0].filters[0].config.budget: calls must be >= 0 and window_s > 0"),
    ({"tenants": {"batch": {"calls": -1}}}, "listeners[0].filters[0].config.tenants.batch.calls: must be >= 0"),
    ({"require_tenant": "yes"}, "listeners[0].filters[0].config.require_tenant: expected bool"),
    ({"tenant_header": ""}, "listeners[0].filters[0].config.tenant_header: must not be empty"),
])
def test_a_bad_config_names_its_yaml_path(config: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        AuditFilterFactory().create(config, "listeners[0].filters[0]")
    assert str(info.value).startswith(where)


def test_check_config_finds_the_filter_by_its_name_and_reports_its_errors(tmp_path: Path) -> None:
    cfg = {"listeners": [{"name": "web", "address": "127.0.0.1:1", "protocols": ["http1"],
                          "filters": [{"type": "acme.audit", "config": {"budget": {"calls": -3}}}],
                          "routes": [{"cluster": "web"}]}],
           "clusters": [{"name": "web", "endpoints": ["127.0.0.1:2"]}]}
    f = tmp_path / "proxy.yaml"
    f.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(f)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "error: listeners[0].filters[0].config.budget: calls must be >= 0" in out.stderr
    cfg["listeners"][0]["filters"][0]["config"] = {"budget": {"calls": 3}}
    f.write_text(yaml.safe_dump(cfg))
    ok = subprocess.run([sys.executable, "-m", "sofamesh", "check-config", str(f)], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr

