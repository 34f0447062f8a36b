"""Requests that repeat a subscription (every SotW ACK repeats its EDS names; two thousand sidecars
subscribe to the same names) are recognised by their wire form: the names are read out of a request
once per distinct subscription, not once per request, and what each stream subscribes to is still
exactly what it asked for."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from sofamesh.pilot.xds.generator import ENDPOINT
from sofamesh.pilot.xds.server import Stream

from ..conftest import run, running_pilot


class Counting:
    """A parsed request whose name lists count how often they are read."""

    reads = 0

    def __init__(self, message: Any) -> None:
        self._m = message

    def __getattr__(self, name: str) -> Any:
        if name in ("resource_names", "resource_names_subscribe", "resource_names_unsubscribe"):
            field = getattr(self._m, name)
            if len(field):
                Counting.reads += 1
            return field
        return getattr(self._m, name)


def _sotw(names: list[str], nonce: str = "", version: str = "") -> Counting:
    return Counting(
        discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="n"),
            type_url=ENDPOINT,
            resource_names=names,
            response_nonce=nonce,
            version_info=version,
        )
    )


def _delta(names: list[str], nonce: str = "", unsubscribe: tuple[str, ...] = ()) -> Counting:
    return Counting(
        discovery_pb2.DeltaDiscoveryRequest(
            node=base_pb2.Node(id="n"),
            type_url=ENDPOINT,
            resource_names_subscribe=names,
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
        )
    )


def _streams(mode: str) -> tuple[list[str], list[Stream]]:
    """300 names, twenty streams, and the read count reset."""
    Counting.reads = 0
    return [f"outbound|80|svc-{i:03d}" for i in range(300)], [
        Stream(1000 + i, mode, "t", asyncio.Queue()) for i in range(20)
    ]


def test_sotw_names_are_read_once_per_subscription_and_each_stream_keeps_its_own(tmp_path: Path) -> None:
    async def body() -> None:
        async with running_pilot(tmp_path) as pilot:
            ads = pilot.ads
            names, streams = _streams("sotw")
            for st in streams:  # twenty sidecars subscribe to the same names, each gets its answer
                assert len(ads._sotw_request(st, _sotw(names))) == 1
            for _round in range(3):  # and ACK it three times
                for st in streams:
                    ts = st.types[ENDPOINT]
                    assert ads._sotw_request(st, _sotw(names, ts.sent_nonce, ts.sent_version)) == []
                    assert ts.status == "ACKED"
            assert Counting.reads == 1
            assert all(st.types[ENDPOINT].names == frozenset(names) for st in streams)
            # a stream that asks for other names gets them, and only it
            st = streams[0]
            ts = st.types[ENDPOINT]
            assert len(ads._sotw_request(st, _sotw(names[:5], ts.sent_nonce, ts.sent_version))) == 1
            assert ts.names == frozenset(names[:5]) and streams[1].types[ENDPOINT].names == frozenset(names)
            # the same names in another order are the same subscription (no answer)
            assert ads._sotw_request(st, _sotw(names[4::-1], ts.sent_nonce, ts.sent_version)) == []
            assert Counting.reads == 3

    run(body())


def test_delta_names_are_read_once_per_subscription_and_later_changes_apply_per_stream(tmp_path: Path) -> None:
    async def body() -> None:
        async with running_pilot(tmp_path) as pilot:
            ads = pilot.ads
            names, streams = _streams("delta")
            for st in streams:
                assert len(ads._delta_request(st, _delta(names))) == 1
                ts = st.types[ENDPOINT]
                assert ads._delta_request(st, _delta([], ts.sent_nonce)) == []  # the ACK
            assert Counting.reads == 1
            st = streams[0]
            ads._delta_request(st, _delta([], unsubscribe=(names[0], names[1])))
            assert st.types[ENDPOINT].names == set(names[2:])
            assert streams[1].types[ENDPOINT].names == set(names)  # not shared with the others

    run(body())
