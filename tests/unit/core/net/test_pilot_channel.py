"""Channels to Pilot: plaintext by default, TLS with Pilot's roots; a roots file that cannot be
used is a ConfigError naming the field and the file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sofamesh.core.config.model import PilotTlsConfig, ProxyConfig
from sofamesh.core.errors import ConfigError
from sofamesh.core.net.pilot_channel import pilot_channel, read_roots


def test_a_missing_roots_file_names_the_field_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_roots(PilotTlsConfig(ca=str(tmp_path / "nope.pem")), "xds.tls")
    assert err.value.path == "xds.tls.ca" and "nope.pem" in str(err.value)


def test_a_roots_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as err:
        read_roots(PilotTlsConfig(ca=str(tmp_path / "empty.pem")), "agent.ca_tls")
    assert err.value.path == "agent.ca_tls.ca" and "GET /v1/ca/roots" in str(err.value)


def test_without_tls_the_channel_is_plaintext() -> None:
    async def make() -> str:
        ch = pilot_channel("127.0.0.1:1", None)
        kind = type(ch).__name__
        await ch.close(None)
        return kind

    assert asyncio.run(make()) == "Channel"


def test_the_xds_section_takes_pilots_roots_and_server_name() -> None:
    proxy = ProxyConfig.model_validate(
        {
            "xds": {
                "address": "127.0.0.1:15012",
                "node_id": "n",
                "tls": {"ca": "roots.pem", "server_name": "pilot.example"},
            }
        }
    )
    assert proxy.xds is not None and proxy.xds.tls == PilotTlsConfig(ca="roots.pem", server_name="pilot.example")
