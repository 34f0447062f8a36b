"""The sidecar's xDS client given several management servers: the order it tries them in, and the
``--xds a,b,c`` flag that names them."""

from __future__ import annotations

import argparse
import asyncio

from sofamesh.cli import xds_config
from sofamesh.core.config.model import ProxyConfig, XdsConfig
from sofamesh.core.xds.client import XdsClient


def test_servers_are_address_then_addresses_without_repeats() -> None:
    xds = XdsConfig(address="127.0.0.1:1", addresses=["127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:3"], node_id="n")
    assert xds.servers == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]


def test_the_xds_flag_takes_a_comma_separated_list() -> None:
    args = argparse.Namespace(
        xds="127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3", node_id="n", cluster=None, xds_mode=None, admin=None, xds_ca=None
    )
    config = xds_config(ProxyConfig(), args)
    assert config.xds.address == "127.0.0.1:1"
    assert config.xds.addresses == ["127.0.0.1:2", "127.0.0.1:3"]


def test_a_failed_stream_moves_to_the_next_server_and_a_round_ends_in_backoff() -> None:
    xds = XdsConfig(address="127.0.0.1:1", addresses=["127.0.0.1:2", "127.0.0.1:3"], node_id="n")
    client = XdsClient(server=None, base=ProxyConfig(), xds=xds, protocols=())  # type: ignore[arg-type]

    async def run() -> list[tuple[str, bool]]:
        seen = []
        for _ in range(4):
            before = client.address
            seen.append((before, await client._next_server()))
        return seen

    assert asyncio.run(run()) == [
        ("127.0.0.1:1", False),
        ("127.0.0.1:2", False),
        ("127.0.0.1:3", True),
        ("127.0.0.1:1", False),
    ]
    assert client.failovers == 4
    assert client.describe()["servers"] == xds.servers
