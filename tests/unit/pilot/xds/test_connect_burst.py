"""Many ADS streams arriving at once while Pilot's event loop is busy: queued, not refused."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from sofamesh.pilot.metrics import PilotMetrics
from sofamesh.pilot.model import MeshModel
from sofamesh.pilot.xds.cache import SnapshotCache
from sofamesh.pilot.xds.generator import CLUSTER
from sofamesh.pilot.xds.server import AdsServer

from ..conftest import run

STREAMS = 24


def _one_stream(port: int, started: threading.Semaphore, results: list[str], i: int) -> None:
    """A sidecar: its own connection, one wildcard CDS request, waits for the first response."""
    done = threading.Event()

    def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
        yield discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        done.wait(10)

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources(requests(), timeout=10)
        started.release()
        try:
            next(call)
            results[i] = "OK"
        except grpc.RpcError as e:
            results[i] = e.code().name
        finally:
            done.set()
            call.cancel()


def burst_while_busy(max_pending_streams: int | None) -> list[str]:
    """Open STREAMS streams while the server's loop is blocked; the status each one ends with."""

    async def main() -> list[str]:
        cache = SnapshotCache(MeshModel(), [])
        ads = (AdsServer(cache, PilotMetrics()) if max_pending_streams is None
               else AdsServer(cache, PilotMetrics(), max_pending_streams=max_pending_streams))
        port = await ads.start("127.0.0.1", 0)
        results = ["none"] * STREAMS
        started = threading.Semaphore(0)
        threads = [threading.Thread(target=_one_stream, args=(port, started, results, i), daemon=True)
                   for i in range(STREAMS)]
        try:
            for t in threads:
                t.start()
            for _ in threads:  # the loop is blocked from here: the streams queue up in gRPC core
                assert started.acquire(timeout=10)
            time.sleep(1.0)  # let every stream's headers arrive while nothing asks for them
            await asyncio.to_thread(lambda: [t.join(15) for t in threads])
        finally:
            await ads.stop(0)
        return results

    return run(main(), 40)


def test_a_burst_of_streams_arriving_while_pilot_is_busy_is_queued_and_served() -> None:
    assert burst_while_busy(None) == ["OK"] * STREAMS


def test_past_grpcs_pending_stream_limit_streams_are_refused_which_is_why_pilot_raises_it() -> None:
    # gRPC's own default is 1000 (refused at random past it, all past 3000); 2 here (all past 4)
    results = burst_while_busy(max_pending_streams=2)
    assert results.count("CANCELLED") >= STREAMS // 2 and set(results) == {"OK", "CANCELLED"}, results
