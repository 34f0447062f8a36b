"""proxy-status and proxy-config as Pilot computes them from its ADS streams: SYNCED only after the
ACK of the last response, STALE while a response or a newer snapshot awaits, NOT SENT, NACKED with
the proxy's error; the resources shown are those the proxy was sent."""

from __future__ import annotations

from pathlib import Path

from sofamesh.pilot.app import Pilot
from sofamesh.pilot.xds.generator import CLUSTER, ENDPOINT
from sofamesh.pilot.xds.status import proxy_config, proxy_status

from .test_ads import AdsClient, _register, ads


def _states(pilot: Pilot) -> dict[str, str]:
    (row,) = proxy_status(pilot.ads)
    return {t: s["state"] for t, s in row["types"].items()}


def test_a_type_is_stale_until_acked_synced_after_and_stale_again_when_the_mesh_changes(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(CLUSTER)
        resp = await c.recv()
        assert _states(pilot) == {"cds": "STALE", "lds": "NOT SENT", "eds": "NOT SENT", "rds": "NOT SENT"}
        c.send(CLUSTER, nonce=resp.nonce, version=resp.version_info)
        assert await c.silent(0.2)
        assert _states(pilot)["cds"] == "SYNCED"
        await _register(pilot, "newsvc", "n1", protocol="http")
        resp = await c.recv()  # the push with the new cluster, not answered yet
        assert _states(pilot)["cds"] == "STALE"
        c.send(CLUSTER, nonce=resp.nonce, version=resp.version_info)
        assert await c.silent(0.2)
        assert _states(pilot)["cds"] == "SYNCED"

    ads(tmp_path, scenario, debounce={"quiet_ms": 10, "max_delay_ms": 50})


def test_a_nacked_type_shows_nacked_with_the_proxys_error_and_the_rejected_version(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(ENDPOINT, ["outbound|80|echo"])
        resp = await c.recv()
        c.send(ENDPOINT, ["outbound|80|echo"], nonce=resp.nonce, error="endpoint 'a': port out of range")
        assert await c.silent(0.2)
        (row,) = proxy_status(pilot.ads)
        eds = row["types"]["eds"]
        assert eds["state"] == "NACKED" and eds["error"] == "endpoint 'a': port out of range"
        assert eds["rejected_version"] == resp.version_info
        assert row["proxy"] == "n1" and row["admin"] is None

    ads(tmp_path, scenario)


def test_proxy_config_holds_the_named_resources_a_proxy_was_sent_and_nothing_for_unknown_ones(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        assert proxy_config(pilot.ads, "n1", "endpoint") is None  # not connected yet
        c.send(ENDPOINT, ["outbound|80|echo"])
        resp = await c.recv()
        c.send(ENDPOINT, ["outbound|80|echo"], nonce=resp.nonce, version=resp.version_info)
        assert await c.silent(0.2)
        doc = proxy_config(pilot.ads, "n1", "endpoint")
        assert doc is not None and doc["state"] == "SYNCED" and doc["exact"] is True
        (res,) = doc["resources"]
        assert res["name"] == "outbound|80|echo"
        ports = sorted(
            lb["endpoint"]["address"]["socket_address"]["port_value"]
            for group in res["resource"]["endpoints"]
            for lb in group["lb_endpoints"]
        )
        assert ports == [9000, 9001]
        assert proxy_config(pilot.ads, "n1", "cluster")["resources"] == []  # type: ignore[index]
        assert proxy_config(pilot.ads, "nobody", "cluster") is None

    ads(tmp_path, scenario)


def test_a_proxy_that_names_its_admin_server_is_shown_with_it_and_a_wildcard_host_becomes_its_peer(
    tmp_path: Path,
) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send(CLUSTER)
        await c.recv()
        (row,) = proxy_status(pilot.ads)
        assert row["admin"] == "127.0.0.1:15000"

    ads(tmp_path, scenario, metadata={"sofamesh.admin": "0.0.0.0:15000"})


def test_in_delta_mode_proxy_config_holds_exactly_the_names_the_proxy_holds(tmp_path: Path) -> None:
    async def scenario(c: AdsClient, pilot: Pilot) -> None:
        c.send_delta(ENDPOINT, subscribe=["outbound|80|echo", "outbound|80|web"])
        resp = await c.recv()
        c.send_delta(ENDPOINT, nonce=resp.nonce)
        assert await c.silent(0.2)
        doc = proxy_config(pilot.ads, "n1", "eds")
        assert doc is not None and doc["state"] == "SYNCED"
        assert [r["name"] for r in doc["resources"]] == ["outbound|80|echo", "outbound|80|web"]
        c.send_delta(ENDPOINT, unsubscribe=["outbound|80|web"])
        assert await c.silent(0.2)
        doc = proxy_config(pilot.ads, "n1", "eds")
        assert doc is not None and [r["name"] for r in doc["resources"]] == ["outbound|80|echo"]
        (row,) = proxy_status(pilot.ads)
        assert row["mode"] == "delta"

    ads(tmp_path, scenario, delta=True)
