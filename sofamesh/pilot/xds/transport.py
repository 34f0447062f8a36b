"""What carries ADS streams to and from the :class:`~sofamesh.pilot.xds.server.AdsServer`.

A transport owns the listening sockets and the gRPC framing; the ADS logic (subscriptions, ACKs,
shared serialized responses) stays in the server, which every transport drives the same way:
``open_stream(mode, peer)`` when a stream starts, ``received(stream, request)`` per parsed request,
``ended(stream)`` when the client closes it, and writes what ``responses(stream)`` yields. Pilot
picks one by ``xds.transport`` (``grpcio``, the default; ``native``: the project's own HTTP/2
codec) from the catalog the ``pilot_register_xds_transports`` hook fills.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

from envoy.service.discovery.v3 import discovery_pb2

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# request type of each ADS method, and the stream mode it serves
ADS_METHODS = {
    "StreamAggregatedResources": ("sotw", discovery_pb2.DiscoveryRequest),
    "DeltaAggregatedResources": ("delta", discovery_pb2.DeltaDiscoveryRequest),
}


class AdsStreams(Protocol):
    """What a transport asks of the ADS server (:class:`~sofamesh.pilot.xds.server.AdsServer`)."""

    max_pending_streams: int

    def open_stream(self, mode: str, peer: str) -> Any: ...

    def received(self, st: Any, request: Any) -> None: ...

    def ended(self, st: Any) -> None: ...

    def responses(self, st: Any) -> AsyncGenerator[bytes, None]: ...


class XdsTransport(ABC):
    """Serves one AdsServer's ADS methods, and ``extra`` gRPC services, on a port."""

    @abstractmethod
    async def start(
        self, ads: AdsStreams, host: str, port: int, extra: Sequence[Any], loopback: bool
    ) -> tuple[int, int]:
        """Listen on ``host:port`` (0: a free port), and with ``loopback`` also on a free port of
        127.0.0.1; returns (port, loopback port or 0). ``extra``: grpc generic handlers (the CSR API)."""

    @abstractmethod
    async def stop(self, grace: float) -> None:
        """Stop listening; open streams (already told to end by the server) get ``grace`` seconds."""

    def describe(self) -> dict[str, Any]:
        return {}


class XdsTransportFactory(Protocol):
    def create(self) -> XdsTransport: ...


__all__ = ["ADS_METHODS", "ADS_SERVICE", "AdsStreams", "XdsTransport", "XdsTransportFactory"]
