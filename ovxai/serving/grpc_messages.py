"""The Open Inference Protocol's gRPC messages and service: the classes tritonclient generated from the protocol's
own ``grpc_service.proto``, imported once here for the server and for Ray Serve's gRPC proxy.

Ray Serve pickles each message between its proxy and a replica, and pickle names a class by its module: these
were generated as module ``grpc_service_pb2``, which nothing installs under that name. Registering the alias
here, in every process that imports this module (the proxy imports :func:`add_servicer` by its path, a replica
imports the deployment), lets both sides find the classes. Kept small: the proxy imports nothing else of ovxai.
"""

from __future__ import annotations

import sys
from typing import Any

from tritonclient.grpc import service_pb2, service_pb2_grpc

sys.modules.setdefault("grpc_service_pb2", service_pb2)
SERVICER_FUNCTION = "ovxai.serving.grpc_messages.add_servicer"
__all__ = ["SERVICER_FUNCTION", "add_servicer", "service_pb2", "service_pb2_grpc"]


def add_servicer(servicer: Any, server: Any) -> None:
    """Register ``GRPCInferenceService`` on a grpc server (what Serve's ``grpc_servicer_functions`` names)."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
