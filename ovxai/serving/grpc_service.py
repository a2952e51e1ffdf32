"""The Open Inference Protocol's ``GRPCInferenceService`` over the shared handlers, with the generated message
classes tritonclient ships (``tritonclient.grpc.service_pb2``): the protocol's own definitions, so a stock
``tritonclient.grpc`` client (``infer``, ``async_infer``, metadata) and any KServe v2 gRPC client work as they are.

:class:`GrpcCalls` answers each method or raises :class:`ProtocolError`; :class:`InferenceServicer` is the
``grpc.aio`` servicer the embedded server registers (errors become gRPC status codes: INVALID_ARGUMENT,
NOT_FOUND, UNAVAILABLE when busy, RESOURCE_EXHAUSTED for an answer over the limit; grpc itself answers
RESOURCE_EXHAUSTED for a message over ``max_body`` and DEADLINE_EXCEEDED for a client's deadline). The Ray
Serve deployment calls :class:`GrpcCalls` from methods of the same names, for Serve's gRPC proxy.
"""

from __future__ import annotations

from typing import Any

import grpc

from ovxai.errors import OvxaiError
from ovxai.serving.grpc_messages import service_pb2 as pb
from ovxai.serving.grpc_messages import service_pb2_grpc as pb_grpc
from ovxai.serving.handlers import Handlers
from ovxai.serving.protocol import ProtocolError, memory_cost

METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


class GrpcCalls:
    """Each gRPC method as a coroutine from request message to response message."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers

    async def ServerLive(self, request: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.handlers.ready)

    async def ModelReady(self, request: Any) -> Any:
        try:  # an unknown model is not ready (as Triton answers): clients ask this to poll, not to fail
            ready = self.handlers.model_ready(request.name, request.version)
        except ProtocolError:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(**self.handlers.server_metadata())

    async def ModelMetadata(self, request: Any) -> Any:
        meta = self.handlers.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]],
        )  # fmt: skip

    async def ModelInfer(self, request: Any) -> Any:
        async with self.handlers.admitted(memory_cost(request.ByteSize(), True)):
            return await self.handlers.infer_grpc(request, pb.ModelInferResponse())

    async def call(self, method: str, request: Any) -> Any:
        """``method`` on ``request``; ProtocolError for every failure (an engine's is a 500)."""
        try:
            return await getattr(self, method)(request)
        except OvxaiError as exc:
            raise ProtocolError(500, str(exc)) from None


def status_code(error: ProtocolError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.grpc_code)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The ``grpc.aio`` servicer: each method through :class:`GrpcCalls`, errors as status codes."""

    def __init__(self, handlers: Handlers) -> None:
        self.calls = GrpcCalls(handlers)

    async def _answer(self, method: str, request: Any, context: Any) -> Any:
        try:
            return await self.calls.call(method, request)
        except ProtocolError as exc:
            await context.abort(status_code(exc), str(exc))

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return await self._answer("ServerLive", request, context)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return await self._answer("ServerReady", request, context)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return await self._answer("ModelReady", request, context)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return await self._answer("ServerMetadata", request, context)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        return await self._answer("ModelMetadata", request, context)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self._answer("ModelInfer", request, context)


def server(handlers: Handlers, address: str, max_workers_rpcs: int = 256) -> tuple[Any, int]:
    """A ``grpc.aio`` server with the service, listening on ``address`` (not started): (server, port).

    Messages over ``max_body`` are refused by grpc itself (RESOURCE_EXHAUSTED); past ``max_workers_rpcs``
    concurrent calls, new ones are refused the same way instead of queueing without bound. The port is not
    shared (no SO_REUSEPORT): a port another server holds is an error, not a second listener."""
    options = handlers.options
    aio_server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", options.max_body + 65536),
            ("grpc.max_send_message_length", options.max_response + 65536),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_workers_rpcs,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(handlers), aio_server)
    port = aio_server.add_insecure_port(address)
    return aio_server, port
