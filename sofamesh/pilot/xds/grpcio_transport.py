"""The ``grpcio`` xDS transport: ADS on grpc.aio's server (gRPC core's HTTP/2)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from sofamesh.core.plugin_host import hookimpl
from sofamesh.pilot.xds.transport import ADS_METHODS, ADS_SERVICE, AdsStreams, XdsTransport

if TYPE_CHECKING:
    from sofamesh.core.catalog import Catalog
    from sofamesh.pilot.xds.transport import XdsTransportFactory


class GrpcioTransport(XdsTransport):
    def __init__(self) -> None:
        self._server: grpc.aio.Server | None = None

    async def start(
        self, ads: AdsStreams, host: str, port: int, extra: Sequence[Any], loopback: bool
    ) -> tuple[int, int]:
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # gRPC core holds a stream that arrives before the application asks for the next one as
                # "pending"; past 1000 of them it refuses new ones at random (all of them at 3000), which
                # the client sees as CANCELLED. grpc.aio asks for one stream at a time from the event
                # loop, so a burst of sidecars connecting while the loop builds responses crosses 1000
                # (about 13 % of 2000 streams were refused). Each ADS stream is one sidecar that will
                # retry anyway: queue them instead.
                ("grpc.server.max_pending_requests", ads.max_pending_streams),
                ("grpc.server.max_pending_requests_hard_limit", 2 * ads.max_pending_streams),
            ]
        )
        # Responses leave the server already serialized; grpc.aio takes a handler for an async
        # generator by its function's code (a partial of the plain function is unwrapped)
        handlers = {
            method: grpc.stream_stream_rpc_method_handler(
                functools.partial(_serve, ads, mode), request_deserializer=request.FromString, response_serializer=bytes
            )
            for method, (mode, request) in ADS_METHODS.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers), *extra))
        bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        loopback_port = int(server.add_insecure_port("127.0.0.1:0")) if loopback else 0
        await server.start()
        self._server = server
        return int(bound), loopback_port

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


async def _pump(ads: AdsStreams, requests: AsyncIterator[Any], st: Any) -> None:
    try:
        async for req in requests:
            ads.received(st, req)
    except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
        pass
    finally:
        ads.ended(st)


async def _serve(ads: AdsStreams, mode: str, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[bytes]:
    st = ads.open_stream(mode, context.peer())
    reader = asyncio.get_running_loop().create_task(_pump(ads, requests, st))
    responses = ads.responses(st)
    try:
        async for resp in responses:
            yield resp
    finally:
        await responses.aclose()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


class _Factory:
    def create(self) -> XdsTransport:
        return GrpcioTransport()


@hookimpl
def pilot_register_xds_transports(catalog: Catalog[XdsTransportFactory]) -> None:
    catalog.add("grpcio", _Factory())


__all__ = ["GrpcioTransport"]
