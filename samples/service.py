"""A production-style HTTP inference service: loads the patched model once, answers with
predictions and saliency, as JSON or as a PNG overlay. Standard library HTTP server; no torch.

    python samples/service.py --model out/efficientnet_lite0_xai.xml --port 8080

    curl --data-binary @samples/photos/chelsea_cat.jpg 'http://127.0.0.1:8080/explain?top_k=3'
    curl --data-binary @samples/photos/chelsea_cat.jpg 'http://127.0.0.1:8080/explain?format=png' > cat.png

Endpoints:
    POST /explain   body: the image file's bytes, with Content-Length. Query: top_k (5), targets (topK
                    for the K best, e.g. top1 (default) or top5; class ids: 281 or 281,285), format
                    (json | png). JSON: top-k, explained classes, their low-resolution maps, timings.
                    PNG: the photo with the first explained class's map on top (only that map is resized).
    GET  /health    {"status": "ok"}
    GET  /info      model, device, classes, input size, preprocessing
Errors come back as JSON {"error": ...}: 400 bad image, query or Content-Length, 404 unknown path,
408 request too slow, 411 no Content-Length, 413 body over 20 MB, 500 a failure of ours.

Slow clients cannot hold threads: a connection silent for --idle-timeout seconds, or one that has not
sent its whole request within --request-timeout seconds, is closed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovxai.errors import OvxaiError
from ovxai.metadata import ModelInfo
from ovxai.runtime import Explainer, Targets, check_targets, parse_targets

MAX_BODY = 20 * 1024 * 1024
PARAMETERS = ("top_k", "targets", "format")


class _Refused(Exception):
    """An answer other than 200, decided before any inference."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ExplainServer(ThreadingHTTPServer):
    """A thread per connection, and a deadline for reading each request: ``serve_forever`` calls
    ``service_actions`` between polls, which shuts down the sockets of requests that are late."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], request_timeout: float):
        super().__init__(address, handler)
        self.request_timeout = request_timeout
        self._reading: dict[socket.socket, float] = {}  # connection -> when its request must be read
        self._reading_lock = threading.Lock()

    def watch(self, connection: socket.socket) -> None:
        with self._reading_lock:
            self._reading[connection] = time.monotonic() + self.request_timeout

    def unwatch(self, connection: socket.socket) -> None:
        with self._reading_lock:
            self._reading.pop(connection, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is one log line, not a traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            sys.stderr.write(f"{client_address[0]} connection closed: {sys.exc_info()[1]}\n")
        else:
            super().handle_error(request, client_address)

    def service_actions(self) -> None:
        now = time.monotonic()
        with self._reading_lock:
            late = [c for c, due in self._reading.items() if due < now]
            for connection in late:
                del self._reading[connection]
        for connection in late:  # the handler's blocked read returns: its thread ends
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def make_server(
    explainer: Explainer,
    host: str,
    port: int,
    info: dict[str, Any],
    idle_timeout: float = 10.0,
    request_timeout: float = 30.0,
) -> ExplainServer:
    lock = threading.Lock()  # one inference request object: requests take turns on it

    class Handler(BaseHTTPRequestHandler):
        server_version = "ovxai-service/0.2"
        timeout = idle_timeout  # applied to the socket by setup(): a silent client is dropped
        server: ExplainServer

        def setup(self) -> None:
            super().setup()
            self.server.watch(self.connection)

        def finish(self) -> None:
            self.server.unwatch(self.connection)
            with contextlib.suppress(OSError):  # the client is gone: nothing to flush to
                super().finish()

        def do_GET(self) -> None:
            self.server.unwatch(self.connection)
            path = urlparse(self.path).path
            if path == "/health":
                self._json(HTTPStatus.OK, {"status": "ok"})
            elif path == "/info":
                self._json(HTTPStatus.OK, info)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {path}; use POST /explain"})

        def do_POST(self) -> None:
            try:
                url = urlparse(self.path)
                if url.path != "/explain":
                    raise _Refused(HTTPStatus.NOT_FOUND, f"no such endpoint {url.path}; use POST /explain")
                top_k, targets, form = _query(url.query, explainer)  # checked before the body is read
                body = self._body()
            except _Refused as refused:
                self.close_connection = True  # a body we did not read must not be taken for a request
                self._json(refused.status, {"error": _clean(str(refused))})
                return
            finally:
                self.server.unwatch(self.connection)
            try:
                with lock:
                    result = explainer.explain(body, targets=targets, top_k=top_k)[0]
                if form == "png":
                    buffer = io.BytesIO()
                    result.overlay(0).save(buffer, format="PNG")
                    self._send(HTTPStatus.OK, "image/png", buffer.getvalue())
                    return
                answer = result.summary()
                answer["image"] = "upload"
                answer["saliency"] = [[[round(float(v), 4) for v in row] for row in m] for m in result.maps]
            except OvxaiError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": _clean(str(exc))})
                return
            except Exception:
                traceback.print_exc(file=sys.stderr)  # ours to fix: the log gets the details, not the client
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the service's log"})
                return
            self._json(HTTPStatus.OK, answer)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted; send Content-Length")
            values = self.headers.get_all("Content-Length") or []
            if not values:
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "no Content-Length; send the image file's bytes with it")
            text = values[0].strip()
            if len(set(values)) > 1 or not (text.isascii() and text.isdigit()):
                shown = ", ".join(v[:20] for v in values)
                raise _Refused(HTTPStatus.BAD_REQUEST, f"Content-Length '{shown}' is not a byte count")
            length = int(text)
            if length > MAX_BODY:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the image is over {MAX_BODY} bytes")
            if length == 0:
                raise _Refused(HTTPStatus.BAD_REQUEST, "empty body; send the image file's bytes")
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                raise _Refused(HTTPStatus.REQUEST_TIMEOUT, f"no data for {idle_timeout:g} s") from None
            if len(body) < length:  # the client stopped, or the request deadline closed the socket
                raise _Refused(HTTPStatus.BAD_REQUEST, f"the body ended after {len(body)} of {length} bytes")
            return body

        def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self._send(status, "application/json", json.dumps(payload).encode())

        def _send(self, status: HTTPStatus, kind: str, data: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client went away (or its deadline closed the socket): no one to answer
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return ExplainServer((host, port), Handler, request_timeout)


def _query(text: str, explainer: Explainer) -> tuple[int, Targets, str]:
    """(top_k, targets, format) from the query string; _Refused (400) naming the bad parameter."""
    pairs = parse_qs(text, keep_blank_values=True)
    unknown = sorted(set(pairs) - set(PARAMETERS))
    if unknown:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"unknown parameter '{unknown[0][:40]}'; use {', '.join(PARAMETERS)}")
    query = {k: v[-1] for k, v in pairs.items()}
    top_k = query.get("top_k", "5")
    if not (top_k.isascii() and top_k.isdigit()) or int(top_k) < 1:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"top_k '{top_k[:20]}' is not a count of 1 or more; e.g. top_k=5")
    form = query.get("format", "json")
    if form not in ("json", "png"):
        raise _Refused(HTTPStatus.BAD_REQUEST, f"format '{form[:20]}' is unknown; use json or png")
    try:
        targets = parse_targets(query.get("targets", "top1")[:1000])
        check_targets(targets, explainer.num_classes)
    except OvxaiError as exc:
        raise _Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None
    return int(top_k), targets, form


def _clean(text: str) -> str:
    """No object reprs or memory addresses in what a client reads."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>|0x[0-9a-fA-F]{6,}", "?", text)[:500]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="patched model (.xml or .onnx)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, NPU, AUTO)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--mean", help="per-channel mean, needed if the model records none (e.g. 0)")
    parser.add_argument("--scale", help="per-channel scale, needed if the model records none (e.g. 1)")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="seconds a client may send nothing")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds to send a whole request")
    args = parser.parse_args(argv)
    try:
        given = ModelInfo.from_options(mean=args.mean, scale=args.scale)
        explainer = Explainer.load(args.model, device=args.device, mean=given.mean, scale=given.scale)
    except OvxaiError as exc:
        sys.exit("service: error: " + re.sub(r"\b(mean|scale)=\s*", r"--\1 ", str(exc)))  # our flags
    info = {
        "model": str(args.model),
        "device": args.device,
        "classes": explainer.num_classes,
        "labels": bool(explainer.labels),
        "input_size": list(explainer.preprocessing.size),
        "preprocessing": explainer.describe_preprocessing(),
    }
    server = make_server(explainer, args.host, args.port, info, args.idle_timeout, args.request_timeout)
    print(f"serving {args.model} on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)  # also the resolution of the request deadline
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
