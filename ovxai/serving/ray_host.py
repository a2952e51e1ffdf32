"""``ovxai serve`` on Ray Serve: replicas (fixed or autoscaled) on one machine or a cluster, for when one process
is not enough. Each replica hosts the same REST application (``rest.py``) and gRPC calls (``grpc_service.py``)
over the same handlers as the embedded server; only the hosting differs: Serve's HTTP proxy (and its gRPC proxy,
which takes tritonclient's generated servicer) routes each request to a replica.

What Ray Serve recommends for latency is on (its performance guide, ``RAY_SERVE_THROUGHPUT_OPTIMIZED``'s parts
that keep the usual proxy): user code and the router on the replica's and proxy's own event loops, request-path
logs buffered and not copied to stderr, no access log; Serve's proxy runs uvloop itself.

The model's files are read into memory when the command starts and travel with the deployment: a replica that
starts later (a replacement, an autoscaled one, one on another node) writes them to a private folder and loads
from there, so a model file deleted or replaced while serving changes nothing, and no node needs the path.
"""

from __future__ import annotations

import ipaddress
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from ovxai.errors import OvxaiError
from ovxai.serving.options import ServeOptions

# Ray Serve's latency settings (read when its processes start; the replica's also travel in its runtime_env).
SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}
DRAIN_S = 30.0  # the longest a replica waits for its requests in flight when it is stopped


def model_files(model: str) -> dict[str, bytes]:
    """The model's files by name, read now: an IR's .xml and .bin, or the .onnx."""
    path = Path(model)
    paths = [path, path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [path]
    try:
        return {p.name: p.read_bytes() for p in paths}
    except OSError as exc:
        raise OvxaiError(f"cannot read the model file '{exc.filename}': {exc.strerror}", "check --model") from None


def deployment_options(options: ServeOptions) -> dict[str, Any]:
    """The ``@serve.deployment`` options ``options`` stand for."""
    deployment: dict[str, Any] = {
        "name": "ovxai",
        "ray_actor_options": {"num_cpus": options.cpus_per_replica, "runtime_env": {"env_vars": dict(SERVE_ENV)}},
        # Enough requests per replica to fill a batch while the previous one runs.
        "max_ongoing_requests": max(8, 2 * options.max_batch_size),
        "graceful_shutdown_wait_loop_s": 0.5,
        "graceful_shutdown_timeout_s": DRAIN_S,
        "health_check_period_s": 2.0,
    }
    if options.autoscaling:
        deployment["autoscaling_config"] = {
            "min_replicas": options.replicas,
            "max_replicas": options.max_replicas,
            "target_ongoing_requests": options.target_ongoing_requests or max(2, options.max_batch_size),
        }
    else:
        deployment["num_replicas"] = options.replicas
    return deployment | options.extra


def application(options: ServeOptions, files: dict[str, bytes] | None = None) -> Any:
    """The Ray Serve application (``serve.run(application(options))``): the deployment bound to ``options`` and
    the model's files (read from ``options.model`` now unless given)."""
    from ray import serve

    @serve.deployment(**deployment_options(options))
    @serve.ingress()
    class OvxaiDeployment:
        def __init__(self, options: ServeOptions, files: dict[str, bytes]) -> None:
            import ray

            from ovxai.serving.grpc_service import GrpcCalls
            from ovxai.serving.handlers import Handlers

            folder = tempfile.mkdtemp(prefix="ovxai-model-")
            try:
                for name, data in files.items():
                    Path(folder, name).write_bytes(data)
                self.handlers = Handlers(replace(options, model=str(Path(folder, Path(options.model).name))))
            finally:
                shutil.rmtree(folder, ignore_errors=True)  # loaded (an engine that maps its weights keeps them)
            self.handlers.options = options  # /v1/info names the file served, not the private copy
            replica_id = getattr(serve.get_replica_context(), "replica_id", None)
            self.where = {
                "replica": str(getattr(replica_id, "unique_id", "?")),
                "node": str(ray.get_runtime_context().get_node_id()),
            }
            self.grpc = GrpcCalls(self.handlers)

        def __serve_build_asgi_app__(self) -> Any:
            from ovxai.serving.rest import RestApp

            app = RestApp(self.handlers)
            app.extra_info = self.where
            return app

        async def _grpc(self, method: str, request: Any, context: Any) -> Any:
            from ovxai.serving.grpc_service import status_code
            from ovxai.serving.protocol import ProtocolError

            try:
                return await self.grpc.call(method, request)
            except ProtocolError as exc:
                if context is None:
                    raise
                context.set_code(status_code(exc))  # Serve's proxy answers with this code and these details
                context.set_details(str(exc))
                raise RuntimeError(str(exc)) from None  # what the proxy unpickles needs nothing of ovxai

        # gRPC methods for Serve's gRPC proxy, named as the protocol's service names them.
        async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:
            return await self._grpc("ServerLive", request, grpc_context)

        async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:
            return await self._grpc("ServerReady", request, grpc_context)

        async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:
            return await self._grpc("ModelReady", request, grpc_context)

        async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:
            return await self._grpc("ServerMetadata", request, grpc_context)

        async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:
            return await self._grpc("ModelMetadata", request, grpc_context)

        async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:
            return await self._grpc("ModelInfer", request, grpc_context)

    deployment: Any = OvxaiDeployment  # a Deployment now; mypy sees the class
    return deployment.bind(options, files if files is not None else model_files(options.model))


def deploy(
    options: ServeOptions,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int = 0,
    proxy_location: str = "HeadOnly",
    files: dict[str, bytes] | None = None,
) -> str:
    """Start Ray Serve's proxies (on the Ray instance this process is connected to) and run the application;
    returns once every replica is up: the model's URL. Serve's HTTP and gRPC options are the cluster's: where
    Serve already runs, its addresses stay what they were."""
    from ray import serve

    from ovxai.serving.grpc_messages import SERVICER_FUNCTION

    grpc_options = {"port": grpc_port, "grpc_servicer_functions": [SERVICER_FUNCTION]} if grpc_port else None
    serve.start(
        http_options={"host": host, "port": port, "keep_alive_timeout_s": 5, "request_timeout_s": 300},
        grpc_options=grpc_options, proxy_location=proxy_location,
    )  # fmt: skip
    serve.run(
        application(options, files), name=options.name, route_prefix="/",
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )  # fmt: skip
    return f"http://{host}:{port}/v2/models/{options.name}"


class _Stop(Exception):
    """SIGTERM, as an exception in the main thread."""


def check_reachable(address: str, seconds: float = 10.0) -> None:
    """A cluster address (``HOST:PORT`` of its GCS) that accepts a connection within ``seconds``, else one line:
    Ray itself would retry for minutes, printing only its own warnings."""
    if address in ("auto", "local") or "://" in address:  # Ray's own spellings: Ray resolves them
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OvxaiError(f"--address '{address}' is not HOST:PORT", "give the head's GCS address, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise OvxaiError(
            f"no Ray cluster answers at {address} ({reason} within {seconds:g} s)",
            "start one there (ray start --head) or check --address / RAY_ADDRESS",
        ) from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_model(
    options: ServeOptions,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int = 0,
    address: str | None = None,
    proxy_location: str = "HeadOnly",
    on_ready: Callable[[str, str | None], None] | None = None,
    node_ip: str | None = None,
) -> None:
    """Deploy ``options`` on Ray Serve and keep it up until Ctrl-C or SIGTERM, then drain.

    ``address`` (else ``RAY_ADDRESS``) joins an existing Ray cluster, where only this application is removed at
    the end; without one a local Ray instance is started here (on ``node_ip``, as ``ray start
    --node-ip-address``) and shut down at the end. A local instance with a loopback ``host`` is refused: Ray's
    own ports listen on every interface (Ray has no setting to keep them on loopback), and loopback must mean
    loopback for every port the command opens."""
    import ray
    from ray import serve

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address and _loopback(host):
        raise OvxaiError(
            f"--host {host} keeps the server on loopback, but a local Ray instance (for --replicas or "
            "--max-replicas) opens Ray's own ports on every interface",
            "serve one replica without Ray (batching runs in process), join a cluster you secured with "
            "--address, or give --host a network address on purpose",
        )
    if not address:  # the ports, before anything starts (Serve's proxy would otherwise fail in its actor)
        from ovxai.serving.embedded import listen

        for number, flag in ((port, "--port"), (grpc_port, "--grpc-port")):
            if number:
                listen(host, number, flag).close()
    files = model_files(options.model)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    if in_main:
        signal.signal(signal.SIGTERM, stop)
    started = False
    try:
        if address:
            check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:  # refused token, version mismatch, ...
                reason = " ".join(str(exc).split())[:200]
                raise OvxaiError(
                    f"cannot join the Ray cluster at {address}: {reason}", "check --address and its token"
                ) from None
        else:
            os.environ.update(SERVE_ENV)  # the proxy and controller start from this environment
            wanted = options.cpus_per_replica * (options.max_replicas or options.replicas)
            started = True
            cpus = max(os.cpu_count() or 1, math.ceil(wanted))
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, _node_ip_address=node_ip,
                     log_to_driver=False)  # fmt: skip
        if in_main:  # Ray's start may have set its own handler
            signal.signal(signal.SIGTERM, stop)
        url = deploy(options, host, port, grpc_port, proxy_location, files)
        if on_ready is not None:
            on_ready(url, f"{host}:{grpc_port}" if grpc_port else None)
        while True:
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the drain short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            # Deleting the application drains it: replicas finish what they accepted before they stop.
            if ray.is_initialized():
                serve.delete(options.name)
                if started:
                    serve.shutdown()
        except Exception as exc:  # best effort: Ray itself still stops below
            print(f"ovxai serve: warning: {type(exc).__name__} while stopping the deployment", file=sys.stderr)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if in_main:
                signal.signal(signal.SIGTERM, previous)
                signal.signal(signal.SIGINT, signal.default_int_handler)
