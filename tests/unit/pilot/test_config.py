"""Pilot config: the YAML file, quick-mode flags, and errors that name the YAML path."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sofamesh.core.errors import ConfigError, ConfigErrors
from sofamesh.pilot import cli
from sofamesh.pilot.config import PilotConfig, load, parse


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["pilot", *argv])


def test_quick_mode_flags_override_the_file(tmp_path: Path) -> None:
    f = tmp_path / "pilot.yaml"
    f.write_text("xds: {address: '127.0.0.1:1'}\napi: {address: '127.0.0.1:2'}\ndebounce: {quiet_ms: 5}\n")
    cfg = cli.config_from_args(_args("-c", str(f), "--xds", "127.0.0.1:15010", "--data-dir", "/tmp/d",
                                     "--max-delay-ms", "50"))
    assert cfg.xds.host_port == ("127.0.0.1", 15010) and cfg.api.host_port == ("127.0.0.1", 2)
    assert (cfg.debounce.quiet_ms, cfg.debounce.max_delay_ms) == (5, 50)
    assert str(cfg.data_dir) == "/tmp/d" and [r.type for r in cfg.registries] == ["embedded"]


def test_the_default_config_reads_and_writes_the_embedded_registry() -> None:
    cfg = parse({})
    assert [(r.name, r.type) for r in cfg.registries] == [("embedded", "embedded")]
    assert cfg.debounce.quiet_ms == 100 and cfg.debounce.max_delay_ms == 1000


@pytest.mark.parametrize(("data", "path"), [
    ({"xds": {"address": "nope"}}, "xds.address"),
    ({"registries": [{"name": "a", "colour": 1}]}, "registries[0].colour"),
    ({"debounce": {"quiet_ms": -1}}, "debounce.quiet_ms"),
    ({"debounce": {"quiet_ms": 10, "max_delay_ms": 5}}, "debounce"),
])
def test_a_config_error_names_its_yaml_path(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.path == path


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(ConfigErrors) as err:
        parse({"xds": {"address": "x"}, "api": {"address": "y"}})
    assert [e.path for e in err.value.errors] == ["xds.address", "api.address"]


def test_run_reports_a_config_error_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("registries: [{name: a}, {name: a}]\n")
    assert cli.run(_args("-c", str(f))) == 2
    assert "duplicate name(s) a" in capsys.readouterr().err


def test_the_example_pilot_config_is_valid() -> None:
    cfg = load(Path(__file__).resolve().parents[3] / "examples" / "pilot.yaml")
    assert cfg.xds.host_port == ("127.0.0.1", 15010) and cfg.registries[0].writable is True


def test_sync_pairs_read_from_and_to_and_must_name_configured_registries() -> None:
    regs = [{"name": "embedded"}, {"name": "zk", "type": "zookeeper", "options": {"hosts": "127.0.0.1:2181"}}]
    cfg = parse({"registries": regs, "sync": {"pairs": [{"from": "zk", "to": "embedded", "two_way": True}]}})
    [pair] = cfg.sync.pairs
    assert (pair.source, pair.target, pair.two_way) == ("zk", "embedded", True)
    with pytest.raises(ConfigError, match="unknown registry 'etcd'"):
        parse({"registries": regs, "sync": {"pairs": [{"from": "zk", "to": "etcd"}]}})
    with pytest.raises(ConfigError, match="cannot sync with itself"):
        parse({"registries": regs, "sync": {"pairs": [{"from": "zk", "to": "zk"}]}})


def test_the_plaintext_xds_port_is_the_default_and_the_tls_port_is_configured_beside_it() -> None:
    assert PilotConfig().xds_tls is None and PilotConfig().xds.address == "127.0.0.1:15010"
    cfg = parse({"xds_tls": {"hostnames": ["pilot.example"]}})
    assert cfg.xds_tls is not None and cfg.xds_tls.host_port == ("127.0.0.1", 15012)
    assert cfg.xds.address == "127.0.0.1:15010" and cfg.xds_tls.hostnames == ["pilot.example"]
