"""The REST endpoints as a plain ASGI application: the Open Inference Protocol (KServe v2), KServe's v1 explain
verb and ``/v1``. Uvicorn runs it in process (``embedded.py``); Ray Serve's replicas run the same application
(``ray_host.py``).

No web framework: a request here is a path match, a body read under its limits and one handler call, and a
framework's routing, middleware and validation would cost more per request than the protocol's own work on a
small model. Every answer other than success is one line of JSON, ``{"error": "..."}``, with a 4xx status for
the client's mistakes (5xx only for failures of ours). A body is refused from its headers before it is read
(411 without ``Content-Length`` or chunked, 413 over ``max_body``, 503 past the in-flight budget) and must
arrive within ``read_timeout_s`` (408); a stalled client holds no thread and blocks no other request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from ovxai.errors import OvxaiError
from ovxai.serving.handlers import Handlers
from ovxai.serving.protocol import ProtocolError, clean, memory_cost

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, bytes, dict[str, str]]
MAX_URL = 8192  # bytes of path and query; a longer URL is a 400
log = logging.getLogger("ovxai.serving")
_JSON = {"content-type": "application/json"}


class ClientGone(Exception):
    """The client closed its connection before its request was read: nobody to answer."""


def error_body(message: str) -> bytes:
    return json.dumps({"error": clean(message)}).encode()


class Request:
    """What a handler needs of an HTTP request: method, path, headers, query, and its body on demand."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = scope.get("query_string", b"").decode("latin-1")
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        self._receive = receive
        self.body_read = False
        self.declared: int | None = None  # the body's length, once accepted from the headers

    def pairs(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    def length(self, limit: int) -> int:
        """The body's declared length, refused from the headers: chunked or absent 411, over ``limit`` 413."""
        if self.headers.get("transfer-encoding"):
            raise ProtocolError(411, "chunked bodies are not accepted; send Content-Length")
        text = self.headers.get("content-length")
        if text is None:
            raise ProtocolError(411, "no Content-Length; send the body with its length")
        if not (text.isascii() and text.isdigit()):
            raise ProtocolError(400, f"Content-Length '{text[:20]}' is not a byte count")
        length = int(text)
        if length > limit:
            raise ProtocolError(413, f"the body is over {limit} bytes")
        if length == 0:
            raise ProtocolError(400, "empty body")
        self.declared = length
        return length

    async def body(self, length: int, timeout_s: float) -> bytes:
        """The whole body, within ``timeout_s`` (408 after)."""
        chunks: list[bytes] = []

        async def read() -> int:
            got = 0
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                got += len(chunk)
                if got > length:
                    raise ProtocolError(400, "the body is longer than its Content-Length")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return got

        try:
            got = await asyncio.wait_for(read(), timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(408, f"the body was not received within {timeout_s:g} s") from None
        if got < length:
            raise ProtocolError(400, f"the body ended after {got} of {length} bytes")
        self.body_read = True
        return b"".join(chunks)

    async def discard(self, timeout_s: float) -> None:
        """Read and drop a body refused before it was read (503 when busy), so that the client, still sending
        it, reads the answer instead of a reset connection; nothing is kept."""
        if self.body_read or self.declared is None:
            return

        async def drain() -> None:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return

        try:
            await asyncio.wait_for(drain(), timeout_s)
            self.body_read = True
        except asyncio.TimeoutError:
            pass


Route = Callable[[Request, dict[str, str]], Awaitable[Answer]]


class RestApp:
    """The ASGI application over one :class:`Handlers`."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.options = handlers.options
        self.extra_info: dict[str, str] = {}  # what the hosting adds to /v1/info (Ray: replica and node)
        model = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
        self.routes: list[tuple[re.Pattern[str], dict[str, Route]]] = [
            (re.compile(r"/v2/?"), {"GET": self._server_metadata}),
            (re.compile(r"/v2/health/live"), {"GET": self._live}),
            (re.compile(r"/v2/health/ready"), {"GET": self._ready}),
            (re.compile(model), {"GET": self._model_metadata}),
            (re.compile(model + "/ready"), {"GET": self._model_ready}),
            (re.compile(model + "/infer"), {"POST": self._infer}),
            (re.compile(r"/v1/models/(?P<name>[^/:]+):explain"), {"POST": self._explain_kserve}),
            (re.compile(r"/v1/explain"), {"POST": self._explain}),
            (re.compile(r"/v1/info"), {"GET": self._info}),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            status, body, headers = await self._dispatch(request, scope)
        except ClientGone:
            return
        except ProtocolError as exc:
            status, body, headers = exc.status, error_body(str(exc)), dict(_JSON)
        except OvxaiError as exc:  # the engine failed on a request it accepted
            status, body, headers = 500, error_body(str(exc)), dict(_JSON)
        except Exception:
            log.exception("request failed")  # ours to fix: the log gets the details
            status, body, headers = 500, error_body("internal error; see the server's log"), dict(_JSON)
        if status >= 400 and status != 408:
            await request.discard(self.options.read_timeout_s)
        if status >= 400 and not request.body_read and request.method == "POST":
            headers["connection"] = "close"  # the unread body must not be taken for the next request
        headers["content-length"] = str(len(body))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else body})

    async def _dispatch(self, request: Request, scope: Scope) -> Answer:
        raw = scope.get("raw_path") or request.path.encode()
        if len(raw) + len(request.query) > MAX_URL:
            raise ProtocolError(400, f"the URL is over {MAX_URL} bytes")
        for pattern, methods in self.routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            method = "GET" if request.method == "HEAD" else request.method
            route = methods.get(method)
            if route is None:
                allowed = ", ".join(sorted({*methods, "HEAD"} if "GET" in methods else methods))
                raise ProtocolError(405, f"{request.method} is not allowed on {request.path[:100]}; use {allowed}")
            return await route(request, {k: v for k, v in match.groupdict().items() if v is not None})
        raise ProtocolError(404, f"no endpoint at {request.path[:100]}; see /v2 and /v1/info")

    # -- health and metadata

    async def _server_metadata(self, request: Request, path: dict[str, str]) -> Answer:
        return _json(self.handlers.server_metadata())

    async def _live(self, request: Request, path: dict[str, str]) -> Answer:
        return _json({"live": True})

    async def _ready(self, request: Request, path: dict[str, str]) -> Answer:
        ready = self.handlers.ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def _model_metadata(self, request: Request, path: dict[str, str]) -> Answer:
        return _json(self.handlers.model_metadata(path["name"], path.get("version")))

    async def _model_ready(self, request: Request, path: dict[str, str]) -> Answer:
        ready = self.handlers.model_ready(path["name"], path.get("version"))
        return _json({"name": path["name"], "ready": ready}, 200 if ready else 503)

    async def _info(self, request: Request, path: dict[str, str]) -> Answer:
        return _json(self.handlers.info() | self.extra_info)

    # -- inference and explanations

    async def _infer(self, request: Request, path: dict[str, str]) -> Answer:
        self.handlers.spec.check_model(path["name"], path.get("version"))
        if request.headers.get("content-encoding", "identity") != "identity":
            raise ProtocolError(400, "compressed requests are not accepted; send the body as is")
        length = request.length(self.options.max_body)
        header_length = request.headers.get("inference-header-content-length")
        async with self.handlers.admitted(memory_cost(length, header_length is not None)):
            body = await request.body(length, self.options.read_timeout_s)
            data, headers = await self.handlers.infer_rest(body, header_length)
        return 200, data, headers

    async def _explain(self, request: Request, path: dict[str, str]) -> Answer:
        pairs = request.pairs()
        self.handlers.explain_query(pairs)  # a bad query is refused before the body is read
        length = request.length(self.options.max_body)
        async with self.handlers.admitted(memory_cost(length, True)):
            body = await request.body(length, self.options.read_timeout_s)
            data, kind = await self.handlers.explain(pairs, body)
        return 200, data, {"content-type": kind}

    async def _explain_kserve(self, request: Request, path: dict[str, str]) -> Answer:
        self.handlers.spec.check_model(path["name"])
        length = request.length(self.options.max_body)
        async with self.handlers.admitted(memory_cost(length, True)):
            body = await request.body(length, self.options.read_timeout_s)
            data = await self.handlers.explain_kserve(path["name"], body)
        return 200, data, dict(_JSON)


def _json(answer: dict[str, Any], status: int = 200) -> Answer:
    return status, json.dumps(answer).encode(), dict(_JSON)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
