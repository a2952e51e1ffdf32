"""``ovxai serve`` in one process, without Ray: the REST app on uvicorn (uvloop, httptools) and the gRPC service on
``grpc.aio``, on one event loop in the process that holds the engine. No proxy and no actor hop: a request is
parsed, batched into the engine and answered here.

The listening sockets are bound before the model is loaded: a port another program holds (another ``ovxai
serve`` included: no SO_REUSEPORT, so no second listener splitting the traffic) or a host that is not an address
of this machine is one line and exit 2 before anything starts, and every port opened is on ``host`` only.
SIGINT and SIGTERM drain: the listeners close, readiness turns false, the requests already accepted are
answered, then the process exits 0 (a second signal cuts the wait short).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ovxai.errors import OvxaiError
from ovxai.serving.handlers import Handlers
from ovxai.serving.options import ServeOptions
from ovxai.serving.rest import MAX_URL, RestApp, error_body

MAX_HEAD = 65536  # bytes of request line and headers
HEAD_TIMEOUT_S = 10.0  # a request's line and headers must arrive within this
DRAIN_S = 30  # the longest wait for accepted requests on shutdown
log = logging.getLogger("ovxai.serving")


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads (URL, headers, and the time to send them) and
    its refusals as one line of JSON instead of plain text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._refusal: str | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes, self._refusal = 0, None
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timeout)

    def on_url(self, url: bytes) -> None:
        self._count(len(url), f"the URL is over {MAX_URL} bytes", MAX_URL)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), f"the request's headers are over {MAX_HEAD} bytes", MAX_HEAD)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _count(self, size: int, refusal: str, limit: int) -> None:
        self._head_bytes += size
        if self._head_bytes > limit:
            self._refusal = refusal
            raise ValueError(refusal)  # httptools stops parsing: send_400_response below answers

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._send_json(408, "the request's head was not received in time")

    def send_400_response(self, msg: str) -> None:
        self._send_json(400, self._refusal or "the request is not valid HTTP/1.1 (request line, headers or lengths)")

    def _send_json(self, status: int, message: str) -> None:
        body = error_body(message)
        reason = {400: b"Bad Request", 408: b"Request Timeout"}[status]
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (status, reason, len(body)) + body)
        self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: this module drains on signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int, flag: str) -> socket.socket:
    """A socket bound to (host, port) and listening, or OvxaiError naming the problem in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise OvxaiError(f"--host '{host}' is not an address or a name this machine resolves",
                         "use an IP address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None  # fmt: skip
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT only
        # Answers go out as head and body, two writes: without this, Nagle holds the body for the client's ACK
        # of the head (a delayed ACK, milliseconds). Accepted connections inherit it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if _unspecified(host) else 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OvxaiError(f"port {port} on {host} is taken by another program",
                             f"stop it or choose another {flag}") from None  # fmt: skip
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
            raise OvxaiError(f"--host '{host}' is not an address of this machine",
                             "use one of its IP addresses, 127.0.0.1 or 0.0.0.0") from None  # fmt: skip
        if exc.errno == errno.EACCES:
            raise OvxaiError(f"port {port} needs privileges to listen on", f"choose {flag} 1024 or above") from None
        raise OvxaiError(f"cannot listen on {host}:{port}: {exc.strerror}", f"check --host and {flag}") from None
    return sock


def _unspecified(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_unspecified
    return False


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(
    options: ServeOptions,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int = 8001,
    on_ready: Callable[[str, str | None], None] | None = None,
    on_loaded: Callable[[Handlers], None] | None = None,
) -> None:
    """Serve ``options`` until SIGINT or SIGTERM, then drain. ``grpc_port`` 0: no gRPC. ``on_loaded(handlers)``
    is called once the model is loaded, ``on_ready(rest_url, grpc_address)`` once both ports serve."""
    http_socket = listen(host, port, "--port")
    grpc_socket = None
    try:
        if grpc_port:
            grpc_socket = listen(host, grpc_port, "--grpc-port")  # held until grpc binds: nobody takes it meanwhile
        handlers = Handlers(options)
        if on_loaded is not None:
            on_loaded(handlers)
    except BaseException:
        http_socket.close()
        if grpc_socket is not None:
            grpc_socket.close()
        raise
    try:
        _run(_main(handlers, http_socket, grpc_socket, host, on_ready))
    finally:
        handlers.close()


def _run(main: Any) -> None:
    try:
        import uvloop
    except ImportError:  # Windows: asyncio's own loop
        asyncio.run(main)
        return
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        uvloop.install()
        asyncio.run(main)


async def _main(
    handlers: Handlers,
    http_socket: socket.socket,
    grpc_socket: socket.socket | None,
    host: str,
    on_ready: Callable[[str, str | None], None] | None,
) -> None:
    from ovxai.serving import grpc_service

    config = uvicorn.Config(
        RestApp(handlers), http=_Protocol, lifespan="off", access_log=False, log_level="warning",
        timeout_keep_alive=5, timeout_graceful_shutdown=DRAIN_S, server_header=False, date_header=False,
    )  # fmt: skip
    http_server = _Server(config)
    grpc_server = None
    grpc_address = None
    if grpc_socket is not None:
        grpc_port = grpc_socket.getsockname()[1]
        grpc_socket.close()
        grpc_server, bound = grpc_service.server(handlers, f"{url_host(host)}:{grpc_port}")
        if not bound:
            raise OvxaiError(f"port {grpc_port} on {host} is taken by another program",
                             "stop it or choose another --grpc-port")  # fmt: skip
        await grpc_server.start()
        grpc_address = f"{url_host(host)}:{grpc_port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if stop.is_set():  # a second signal: stop waiting for the requests in flight
            http_server.force_exit = True
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    http_task = asyncio.create_task(http_server.serve(sockets=[http_socket]))
    while not http_server.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():
        http_task.result()
        raise OvxaiError("the HTTP server did not start", "see the log above")
    port = http_socket.getsockname()[1]
    if on_ready is not None:
        on_ready(f"http://{url_host(host)}:{port}/v2/models/{handlers.name}", grpc_address)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({http_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    # Drain: not ready, listeners closed, accepted requests answered, then the engine's queue emptied.
    handlers.ready = False
    http_server.should_exit = True
    waits = [http_task]
    if grpc_server is not None:
        waits.append(asyncio.create_task(grpc_server.stop(DRAIN_S)))
    await asyncio.gather(*waits, return_exceptions=True)
    await handlers.batcher.idle()
    stopped.cancel()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
