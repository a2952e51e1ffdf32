"""A production-style HTTP inference service: loads the patched model once, answers with
predictions and saliency, as JSON or as a PNG overlay. Standard library HTTP server; no torch.

    python samples/service.py --model out/efficientnet_lite0_xai.xml --port 8080

    curl --data-binary @samples/photos/chelsea_cat.jpg 'http://127.0.0.1:8080/explain?top_k=3'
    curl --data-binary @samples/photos/chelsea_cat.jpg 'http://127.0.0.1:8080/explain?format=png' > cat.png

Endpoints:
    POST /explain   body: the image file's bytes. Query: top_k (5), targets (top1 | k | ids like 281,285),
                    format (json | png). JSON: top-k, explained classes, their low-resolution maps, timings.
                    PNG: the photo with the first explained class's map on top.
    GET  /health    {"status": "ok"}
    GET  /info      model, device, classes, input size
Errors come back as JSON {"error": ...}: 400 bad image or query, 404 unknown path, 413 body too large.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovxai.errors import OvxaiError
from ovxai.runtime import Explainer

MAX_BODY = 20 * 1024 * 1024


def make_server(explainer: Explainer, host: str, port: int, info: dict[str, Any]) -> ThreadingHTTPServer:
    lock = threading.Lock()  # one inference request object: requests take turns on it

    class Handler(BaseHTTPRequestHandler):
        server_version = "ovxai-service/0.1"

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            if path == "/health":
                self._json(HTTPStatus.OK, {"status": "ok"})
            elif path == "/info":
                self._json(HTTPStatus.OK, info)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {path}; use POST /explain"})

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path != "/explain":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {url.path}; use POST /explain"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"image over {MAX_BODY} bytes"})
                return
            if length == 0:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "empty body; send the image file's bytes"})
                return
            body = self.rfile.read(length)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                top_k = int(query.get("top_k", 5))
                targets = _targets(query.get("targets", "top1"))
                with lock:
                    result = explainer.explain(body, targets=targets, top_k=top_k)[0]
            except (OvxaiError, ValueError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            if query.get("format", "json") == "png":
                buffer = io.BytesIO()
                result.overlay(0).save(buffer, format="PNG")
                self._send(HTTPStatus.OK, "image/png", buffer.getvalue())
                return
            answer = result.summary()
            answer["image"] = "upload"
            answer["saliency"] = [[[round(float(v), 4) for v in row] for row in m] for m in result.maps]
            self._json(HTTPStatus.OK, answer)

        def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self._send(status, "application/json", json.dumps(payload).encode())

        def _send(self, status: HTTPStatus, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return ThreadingHTTPServer((host, port), Handler)


def _targets(text: str) -> str | int | list[int]:
    if text == "top1":
        return text
    if text.isdigit():
        return int(text)
    return [int(t) for t in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="patched model (.xml or .onnx)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, NPU, AUTO)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        explainer = Explainer.load(args.model, device=args.device)
    except OvxaiError as exc:
        sys.exit(f"service: error: {exc}")
    info = {
        "model": str(args.model),
        "device": args.device,
        "classes": len(explainer.labels) if explainer.labels else None,
        "input_size": list(explainer.preprocessing.size),
    }
    server = make_server(explainer, args.host, args.port, info)
    print(f"serving {args.model} on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
