"""Joining a Ray cluster with a bounded wait: the address is asked first, on its own, whether it is a Ray
cluster that takes this driver, so that a wrong address or token is one line within seconds.

``ray.init(address=...)`` alone tries an unreachable address for minutes (20 tries of 5 s to connect and
30 s for the cluster's id) with Ray's warnings as the only output, and a rejected token for 20 s, one
warning line a second, before its ``ConnectionError``. Here the cluster's GCS is asked once for its id
(``NodeInfoGcsService.GetClusterId``, the call ``ray.init`` starts with) over gRPC, with Ray's own token
interceptor (``RAY_AUTH_TOKEN``, ``~/.ray/auth_token``) and a deadline: refused, silent, not Ray, or the
token rejected — each gets its sentence.
"""

from __future__ import annotations

import re
from typing import Any

from ovxai.errors import OvxaiError

JOIN_TIMEOUT_S = 10.0  # the longest wait for a cluster's first answer
_HOST_PORT = re.compile(r"(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d{1,5})")
_FIX = "check --address (or RAY_ADDRESS) and that the cluster is up: ray status on its head"


def check_cluster(address: str, timeout: float = JOIN_TIMEOUT_S) -> None:
    """OvxaiError unless the Ray cluster at ``address`` (``HOST:PORT``, the head's GCS) answers within
    ``timeout`` seconds and accepts this process's token. Other spellings (``auto``, ``ray://...``) are
    left to Ray; so is everything when Ray's generated gRPC classes are not where this Ray version is
    known to keep them."""
    match = _HOST_PORT.fullmatch(address.strip())
    if match is None:
        return
    if not 0 < int(match["port"]) < 65536:
        raise OvxaiError(f"the Ray address '{address}' has no valid port", "use HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return
    channel: Any = grpc.insecure_channel(address.strip())
    try:
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            SyncAuthenticationMetadataClientInterceptor,
        )

        channel = grpc.intercept_channel(channel, SyncAuthenticationMetadataClientInterceptor())
    except ImportError:  # a Ray without token authentication
        pass
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise OvxaiError(
                f"the Ray cluster at {address} rejected this driver's token",
                "set RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the cluster's token, with RAY_AUTH_MODE=token",
            ) from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise OvxaiError(f"the Ray cluster at {address} did not answer within {timeout:g} s", _FIX) from None
        if code == grpc.StatusCode.UNAVAILABLE:
            reason = (exc.details() if hasattr(exc, "details") else "") or "unavailable"
            reason = reason.rsplit(": ", 1)[-1]  # 'Connection refused', not gRPC's whole chain
            raise OvxaiError(f"cannot reach a Ray cluster at {address} ({reason})", _FIX) from None
        raise OvxaiError(f"{address} does not answer as a Ray cluster's head ({code})", _FIX) from None
    finally:
        channel.close()
