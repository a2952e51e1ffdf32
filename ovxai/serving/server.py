"""``ovxai serve``: a patched model on Ray Serve, speaking the Open Inference Protocol.

Each replica loads the model once (``ovxai.runtime.Explainer``: OpenVINO or ONNX Runtime, on the device
asked for); Ray Serve's dynamic batching (``@serve.batch``) groups concurrent requests into one
inference; replicas are fixed or autoscaled; a FastAPI app is the ingress. Endpoints:

- The Open Inference Protocol (KServe v2) REST API, as OpenVINO Model Server, Triton and KServe speak it:
  ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/NAME`` (metadata, with the model's
  labels and preprocessing in ``parameters``), ``/v2/models/NAME/ready``, ``POST /v2/models/NAME/infer``
  with JSON tensors or the binary tensor data extension (``Inference-Header-Content-Length``,
  ``binary_data_size``, ``binary_data``, ``binary_data_output``), the versioned forms
  (``/v2/models/NAME/versions/1/...``) too. The client sends the model's own input tensor (it did the
  preprocessing) and gets the model's own outputs: ``tritonclient.http`` works with its defaults, and so
  does ``Explainer.load("http://HOST:PORT/v2/models/NAME")``.
- ``POST /v1/explain``: image file bytes in; top-k and the maps as JSON, or (``?format=png``) the photo with
  one map on top. ``GET /v1/info``: the model, its preprocessing, the batching, which replica answered.

Errors are one-line JSON ``{"error": ...}`` with a 4xx status (5xx for failures of ours): a body that is
missing, empty, chunked, over ``max_body`` (checked before it is read) or not sent within
``read_timeout_s``; an image that cannot be decoded or has over ``max_pixels`` pixels (refused before it
is decoded); a tensor with the wrong name, shape, datatype or size. A malformed ``Content-Length`` is
refused by Ray Serve's HTTP server itself (400, plain text) before any of this runs.

Ray and FastAPI are imported only here, in the functions that need them (``pip install 'ovxai[serve]'``).
"""

# No ``from __future__ import annotations``: FastAPI reads the route handlers' annotations when the routes
# are made, and the handlers are defined inside ``application()``, where ``Request`` is a local name.

import asyncio
import io
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from ovxai.errors import OvxaiError
from ovxai.metadata import ModelInfo, as_parameters
from ovxai.runtime import Explainer, Targets, check_targets, parse_targets
from ovxai.runtime.backends import OIP_DATATYPES, Outputs, open_session
from ovxai.runtime.images import ImageError, load_rgb
from ovxai.serving.source import ModelSource

MAX_BODY = 20 * 1024 * 1024  # bytes: a request body over this is refused before it is read
MAX_PIXELS = 40_000_000  # an image over this is refused before it is decoded (a 9000 x 9000 PNG is 81 MP)
READ_TIMEOUT_S = 10.0  # a client that has not sent its whole body by then gets 408
VERSION = "1"  # the one model version served
EXPLAIN_PARAMETERS = ("top_k", "targets", "format")
_DATATYPE_OF = {numpy: oip for oip, numpy in OIP_DATATYPES.items()}  # numpy's name -> the protocol's
_PLATFORMS = {"OpenVinoSession": "openvino", "OnnxRuntimeSession": "onnxruntime_onnx"}
log = logging.getLogger("ovxai.serving")


class HttpError(Exception):
    """An answer other than 200: the status and the one-line message the client reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(_clean(message))
        self.status = status


def _clean(text: str) -> str:
    """One line, no object reprs or memory addresses, bounded."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>|0x[0-9a-fA-F]{6,}", "?", " ".join(text.split()))
    return text[:500]


@dataclass(frozen=True)
class ServeOptions(ModelSource):
    """What ``ovxai serve`` deploys: the model and how each replica loads it, batching, replicas, limits.

    ``replicas`` is the fixed count, or the minimum when ``max_replicas`` is larger (Serve's autoscaler then
    adds replicas while each has more than ``target_ongoing_requests`` requests). ``max_batch_size`` 1
    turns dynamic batching off; requests that arrive during an inference form the next batch together.
    ``batch_wait_ms`` makes a batch also wait that long for company after its first request, a wait a
    lone request pays in full (hence 0). The model file must be readable at the same path on every node."""

    name: str = ""  # the model's name in the protocol; default: the file's stem
    max_batch_size: int = 8
    batch_wait_ms: float = 0.0
    replicas: int = 1
    max_replicas: int | None = None
    cpus_per_replica: float = 1.0
    target_ongoing_requests: float | None = None  # autoscaling target; default max(2, max_batch_size)
    max_body: int = MAX_BODY
    max_pixels: int = MAX_PIXELS
    read_timeout_s: float = READ_TIMEOUT_S
    protocol_only: bool = False  # any one-input model over /v2 only, /v1 off (an unpatched baseline)
    extra: dict[str, Any] = field(default_factory=dict)  # more ``@serve.deployment`` options, as given

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", os.fspath(self.model))
        if not self.name:
            object.__setattr__(self, "name", Path(self.model).stem)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", self.name):
            raise OvxaiError(f"name= '{self.name}' cannot name a model in a URL", "use letters, digits, '_', '-', '.'")
        for what, value, least in (
            ("max_batch_size", self.max_batch_size, 1),
            ("replicas", self.replicas, 1),
            ("max_body", self.max_body, 1),
            ("max_pixels", self.max_pixels, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise OvxaiError(f"{what}= {value} is not a whole number of {least} or more", f"use {what}={least}+")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise OvxaiError(
                f"max_replicas= {self.max_replicas} is below replicas= {self.replicas}",
                "give max_replicas= at least replicas= (the minimum when autoscaling)",
            )
        for what, number in (("batch_wait_ms", self.batch_wait_ms), ("read_timeout_s", self.read_timeout_s)):
            if not math.isfinite(number) or number < 0 or (what == "read_timeout_s" and number == 0):
                raise OvxaiError(f"{what}= {number} is not a usable time", f"give {what}= a positive number")
        if not math.isfinite(self.cpus_per_replica) or self.cpus_per_replica <= 0:
            raise OvxaiError(f"cpus_per_replica= {self.cpus_per_replica} is not a CPU count", "e.g. 1 or 0.5")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None and self.max_replicas > self.replicas

    def deployment_options(self) -> dict[str, Any]:
        """The ``@serve.deployment`` options these stand for."""
        options: dict[str, Any] = {
            "name": "ovxai",
            # Handlers on the replica's own event loop, not a second loop in another thread (Ray's default):
            # one thread hop less per request, 0.4-1.8 ms less replica CPU in 5 of 6 runs of
            # tools/bench_serving.py. Nothing here blocks the loop: inference and JSON tensors run in threads.
            "ray_actor_options": {
                "num_cpus": self.cpus_per_replica,
                "runtime_env": {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}},
            },
            # Enough requests per replica to fill a batch while the previous one runs.
            "max_ongoing_requests": max(8, 2 * self.max_batch_size),
            "graceful_shutdown_wait_loop_s": 0.5,
            "graceful_shutdown_timeout_s": 5.0,
            "health_check_period_s": 2.0,
        }
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests or max(2, self.max_batch_size),
            }
        else:
            options["num_replicas"] = self.replicas
        return options | self.extra


@dataclass
class InferRequest:
    """A parsed ``/infer`` request: the input tensor and how to send each output back."""

    tensor: np.ndarray
    outputs: list[tuple[str, bool]]  # (output name, as binary data)
    id: str | None = None


class ModelService:
    """One replica's model and the protocols around it, without Ray or HTTP: what the deployment's routes
    call (and what tests can call directly). Inference runs one request at a time (``run``)."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.name = options.name
        self._explainer: Explainer | None = None
        if options.protocol_only:
            session = open_session(options.model, options.backend, options.device)
            self.parameters = as_parameters(session.info)
        else:
            explainer = options.load()
            session, prep, self._explainer = explainer.session, explainer.preprocessing, explainer
            score = explainer.score if explainer.score in ("softmax", "logits", "sigmoid") else None
            effective = ModelInfo(
                tuple(explainer.labels) if explainer.labels else None, prep.mean, prep.scale, prep.channel_order,
                score, explainer.probabilities,  # type: ignore[arg-type]
            )  # fmt: skip
            self.parameters = as_parameters(effective)  # what the server uses: a remote client does the same
        self.session = session
        self.static_batch = session.input_shape[0]
        self.input = {
            "name": session.input_name,
            "datatype": _datatype(session.input_dtype),
            "shape": [-1 if d is None else d for d in session.input_shape],
        }
        self.outputs = [
            {"name": n, "datatype": _datatype(session.output_dtypes[n]), "shape": [-1 if d is None else d for d in s]}
            for n, s in ((n, session.output_shapes[n]) for n in session.output_names)
        ]
        self._input_dtype = np.dtype(session.input_dtype)
        self._lock = threading.Lock()  # one inference request object: callers take turns
        self._runs = {"inferences": 0, "requests": 0, "images": 0, "seconds": 0.0}  # what `run` did so far

    @property
    def explainer(self) -> Explainer:
        if self._explainer is None:
            raise HttpError(404, f"'{self.name}' is served over the Open Inference Protocol (/v2) only")
        return self._explainer

    # -- metadata ------------------------------------------------------------------------------------

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise HttpError(404, f"unknown model '{name[:100]}'; this server serves '{self.name}'")
        if version is not None and version != VERSION:
            raise HttpError(404, f"unknown version '{version[:20]}' of '{self.name}'; it has version {VERSION}")

    def model_metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": _PLATFORMS.get(type(self.session).__name__, "ovxai"),
            "inputs": [self.input],
            "outputs": self.outputs,
            "parameters": self.parameters,
        }

    def info(self) -> dict[str, Any]:
        answer = {
            "model": self.name,
            "file": Path(self.options.model).name,
            "device": self.options.device,
            "backend": _PLATFORMS.get(type(self.session).__name__, type(self.session).__name__),
            "max_batch_size": self.options.max_batch_size,
            "batch_wait_ms": self.options.batch_wait_ms,
            "pid": os.getpid(),
            "served": self._served(),
        }
        if self._explainer is not None:
            answer |= {
                "classes": self._explainer.num_classes,
                "labels": bool(self._explainer.labels),
                "input_size": list(self._explainer.preprocessing.size),
                "preprocessing": self._explainer.describe_preprocessing(),
                "method": self._explainer.method,
            }
        return answer

    # -- the Open Inference Protocol ------------------------------------------------------------------

    def parse_infer(self, body: bytes, header_length: str | None) -> InferRequest:
        """A v2 inference request (JSON, optionally followed by binary tensor data); HttpError 400 naming
        what is wrong with it."""
        if header_length is not None:
            text = header_length.strip()
            if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= len(body):
                raise HttpError(400, f"Inference-Header-Content-Length '{text[:20]}' is not a length within the body")
            head, binary = body[: int(text)], memoryview(body)[int(text) :]
        else:
            head, binary = body, memoryview(b"")
        try:
            request = json.loads(head)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "the request is not JSON; send a v2 inference request") from None
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise HttpError(400, "the request has no 'inputs' list")
        parameters = _parameters(request, "the request")
        inputs = request["inputs"]
        if len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise HttpError(400, f"the model takes one input, '{self.input['name']}'; the request has {len(inputs)}")
        tensor, used = self._tensor(inputs[0], binary)
        if used != len(binary):
            raise HttpError(400, f"the body has {len(binary) - used} bytes of binary data that no input claims")
        default_binary = parameters.get("binary_data_output", False)
        if not isinstance(default_binary, bool):
            raise HttpError(400, "the parameter 'binary_data_output' must be true or false")
        wanted = request.get("outputs")
        names = [str(o["name"]) for o in self.outputs]
        if wanted is None:
            outputs = [(name, default_binary) for name in names]
        else:
            if not isinstance(wanted, list) or not wanted:
                raise HttpError(400, "'outputs' must be a non-empty list of {\"name\": ...} objects")
            outputs = []
            for item in wanted:
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str) or name not in names:
                    raise HttpError(400, f"unknown output {str(name)[:100]!r}; the model has {', '.join(names)}")
                options = _parameters(item, f"output '{name}'")
                if options.get("classification"):
                    raise HttpError(400, "the classification extension is not supported; ask for the tensors")
                as_binary = options.get("binary_data", default_binary)
                if not isinstance(as_binary, bool):
                    raise HttpError(400, f"the parameter 'binary_data' of output '{name}' must be true or false")
                outputs.append((name, as_binary))
        request_id = request.get("id")
        return InferRequest(tensor, outputs, request_id if isinstance(request_id, str) else None)

    def _tensor(self, spec: dict[str, Any], binary: memoryview) -> tuple[np.ndarray, int]:
        """The input tensor of a request and how many binary bytes it took."""
        expected = self.input
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        if name != expected["name"]:
            raise HttpError(400, f"unknown input {str(name)[:100]!r}; the model's input is '{expected['name']}'")
        if datatype != expected["datatype"]:
            got = str(datatype)[:20]
            raise HttpError(400, f"input '{name}' has datatype {got}; the model takes {expected['datatype']}")
        model_shape = expected["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != len(model_shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
            or any(m != -1 and d != m for d, m in zip(shape, model_shape, strict=True))
        ):
            raise HttpError(400, f"input '{name}' has shape {str(shape)[:60]}; the model takes {model_shape} (-1: any)")
        count = math.prod(shape)
        size = self._input_dtype.itemsize * count
        if size > self.options.max_body:
            raise HttpError(413, f"input '{name}' of shape {shape} is over {self.options.max_body} bytes")
        parameters = _parameters(spec, f"input '{name}'")
        if "binary_data_size" in parameters:
            given = parameters["binary_data_size"]
            if isinstance(given, bool) or not isinstance(given, int) or given != size:
                raise HttpError(400, f"input '{name}' of shape {shape} is {size} bytes, not binary_data_size {given}")
            if len(binary) < size:
                raise HttpError(400, f"input '{name}' needs {size} bytes of binary data; the body has {len(binary)}")
            return np.frombuffer(binary[:size], self._input_dtype).reshape(shape), size
        data = spec.get("data")
        if not isinstance(data, list):
            raise HttpError(400, f"input '{name}' has neither 'data' nor a binary_data_size parameter")
        try:
            values = np.array(data)
        except ValueError:  # ragged nesting
            raise HttpError(400, f"the data of input '{name}' is not a regular array of numbers") from None
        if values.dtype.kind not in "iuf" or values.size != count:
            what = f"{values.size} numbers" if values.dtype.kind in "iuf" else "values that are not all numbers"
            raise HttpError(400, f"input '{name}' of shape {shape} needs {count} numbers; the request has {what}")
        return values.astype(self._input_dtype).reshape(shape), 0

    def _served(self) -> dict[str, float]:
        """Requests and images served so far, in how many inferences and how much engine time."""
        with self._lock:
            runs = dict(self._runs)
        inferences = max(runs["inferences"], 1)
        return {
            "requests": runs["requests"],
            "images": runs["images"],
            "inferences": runs["inferences"],
            "requests_per_inference": round(runs["requests"] / inferences, 2),
            "inference_ms_mean": round(runs["seconds"] * 1000 / inferences, 3),
        }

    def run(self, tensors: Sequence[np.ndarray]) -> list[Outputs]:
        """Run the model on several requests' tensors at once (one inference per shape), split back."""
        with self._lock:
            began = time.perf_counter()
            results = self._run(tensors)
            self._runs["seconds"] += time.perf_counter() - began
            self._runs["requests"] += len(tensors)
            self._runs["images"] += sum(len(t) for t in tensors)
            return results

    def _run(self, tensors: Sequence[np.ndarray]) -> list[Outputs]:
        if self.static_batch:  # a fixed batch: each request as it came (its shape was checked)
            self._runs["inferences"] += len(tensors)
            return [self.session.infer(t) for t in tensors]
        results: list[Outputs | None] = [None] * len(tensors)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, tensor in enumerate(tensors):
            groups.setdefault(tuple(tensor.shape[1:]), []).append(i)
        for members in groups.values():
            batch = np.concatenate([tensors[i] for i in members]) if len(members) > 1 else tensors[members[0]]
            outputs = self.session.infer(batch)
            self._runs["inferences"] += 1
            start = 0
            for i in members:
                rows = len(tensors[i])
                results[i] = {k: v[start : start + rows] for k, v in outputs.items()}
                start += rows
        return [r for r in results if r is not None]

    def encode_infer(self, request: InferRequest, outputs: Outputs) -> tuple[bytes, dict[str, str]]:
        """The v2 response: (body, headers). Binary outputs follow the JSON, in the order listed."""
        listed, blobs = [], []
        for name, as_binary in request.outputs:
            array = np.ascontiguousarray(outputs[name])
            entry: dict[str, Any] = {"name": name, "datatype": _datatype(array.dtype.name), "shape": list(array.shape)}
            if as_binary:
                blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = array.ravel().tolist()
            listed.append(entry)
        answer: dict[str, Any] = {"model_name": self.name, "model_version": VERSION, "outputs": listed}
        if request.id is not None:
            answer["id"] = request.id
        head = json.dumps(answer, separators=(",", ":")).encode()
        if not blobs:
            return head, {"Content-Type": "application/json"}
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
        return b"".join([head, *blobs]), headers

    # -- /v1/explain ------------------------------------------------------------------------------------

    def explain_query(self, pairs: Sequence[tuple[str, str]]) -> tuple[int, Targets, str]:
        """(top_k, targets, format) from the query string; HttpError 400 naming the bad parameter."""
        unknown = sorted({k for k, _ in pairs} - set(EXPLAIN_PARAMETERS))
        if unknown:
            raise HttpError(400, f"unknown parameter '{unknown[0][:40]}'; use {', '.join(EXPLAIN_PARAMETERS)}")
        query = dict(pairs)  # the last value of each
        top_k = query.get("top_k", "5")
        if not (top_k.isascii() and top_k.isdigit()) or int(top_k) < 1:
            raise HttpError(400, f"top_k '{top_k[:20]}' is not a count of 1 or more; e.g. top_k=5")
        form = query.get("format", "json")
        if form not in ("json", "png"):
            raise HttpError(400, f"format '{form[:20]}' is unknown; use json or png")
        try:
            targets = parse_targets(query.get("targets", "top1")[:1000])
            check_targets(targets, self.explainer.num_classes)
        except OvxaiError as exc:
            raise HttpError(400, str(exc)) from None
        return int(top_k), targets, form

    def prepare_image(self, body: bytes) -> Any:
        """Decode (refusing images over ``max_pixels`` before decoding them) and preprocess: a Batch."""
        try:
            _, image = load_rgb(body, max_pixels=self.options.max_pixels)
            return self.explainer.prepare(image)
        except ImageError as exc:
            raise HttpError(400, str(exc).replace("'<bytes>'", "the upload")) from None

    def explain_answer(
        self, batch: Any, outputs: Outputs, targets: Targets, top_k: int, form: str
    ) -> tuple[bytes, str]:
        try:
            (result,) = self.explainer.postprocess(batch, outputs, targets, top_k)
        except OvxaiError as exc:  # a class id beyond a model whose class count shows only now
            raise HttpError(400, str(exc)) from None
        if form == "png":
            buffer = io.BytesIO()
            result.overlay(0).save(buffer, format="PNG")  # only the drawn map is resized
            return buffer.getvalue(), "image/png"
        answer = result.summary()
        answer["image"] = "upload"
        answer["saliency"] = np.round(result.maps.astype(np.float64), 4).tolist()
        return json.dumps(answer).encode(), "application/json"


def _datatype(numpy_name: str) -> str:
    return _DATATYPE_OF.get(numpy_name, numpy_name.upper())


def _parameters(spec: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, dict):
        raise HttpError(400, f"the 'parameters' of {what} must be an object")
    return parameters


# -- Ray Serve ----------------------------------------------------------------------------------------


def application(options: ServeOptions) -> Any:
    """The Ray Serve application (``serve.run(application(options))``): the deployment with its FastAPI
    ingress, bound to ``options``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from ray import serve
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    app = FastAPI(title="ovxai", docs_url=None, redoc_url=None, openapi_url=None)

    async def refused(request: Request, exc: Exception) -> Response:
        status = exc.status if isinstance(exc, HttpError) else getattr(exc, "status_code", 400)
        message = str(exc) if isinstance(exc, HttpError) else str(getattr(exc, "detail", "bad request"))
        if isinstance(exc, RequestValidationError):
            status, message = 400, "the request's path or query is malformed"
        return JSONResponse({"error": _clean(message)}, status_code=status)

    async def failed(request: Request, exc: Exception) -> Response:
        log.exception("request failed", exc_info=exc)  # ours to fix: the log gets the details
        return JSONResponse({"error": "internal error; see the server's log"}, status_code=500)

    app.add_exception_handler(HttpError, refused)
    app.add_exception_handler(HTTPException, refused)  # unknown paths (404), wrong methods (405)
    app.add_exception_handler(RequestValidationError, refused)
    app.add_exception_handler(Exception, failed)

    batching = options.max_batch_size > 1

    @serve.deployment(**options.deployment_options())
    @serve.ingress(app)
    class OvxaiDeployment:
        def __init__(self, options: ServeOptions) -> None:
            self.service = ModelService(options)
            self.options = options
            import ray

            replica_id = getattr(serve.get_replica_context(), "replica_id", None)
            self.replica = str(getattr(replica_id, "unique_id", "?"))
            self.node = str(ray.get_runtime_context().get_node_id())
            self._engine_free = asyncio.Event()
            self._engine_free.set()

        async def _infer(self, tensor: np.ndarray) -> Outputs:
            if batching:
                # Serve forms a batch from what is queued the moment a request arrives, even while the
                # engine is busy: requests arriving during an inference would each make a batch of one.
                # They wait here instead and enter together when it ends, as one batch.
                await self._engine_free.wait()
                result: Outputs = await self._batched(tensor)
                return result
            (outputs,) = await asyncio.to_thread(self.service.run, [tensor])
            return outputs

        @serve.batch(max_batch_size=options.max_batch_size, batch_wait_timeout_s=options.batch_wait_ms / 1000)
        async def _batched(self, tensors: list[np.ndarray]) -> list[Outputs]:
            self._engine_free.clear()
            try:
                return await asyncio.to_thread(self.service.run, tensors)
            finally:
                self._engine_free.set()

        async def _body(self, request: Request) -> bytes:
            """The whole body, refused by its headers first (411, 413, 400) and read within the deadline."""
            limit = self.options.max_body
            if request.headers.get("transfer-encoding"):
                raise HttpError(411, "chunked bodies are not accepted; send Content-Length")
            text = request.headers.get("content-length")
            if text is None:
                raise HttpError(411, "no Content-Length; send the body with its length")
            if not (text.isascii() and text.isdigit()):
                raise HttpError(400, f"Content-Length '{text[:20]}' is not a byte count")
            length = int(text)
            if length > limit:
                raise HttpError(413, f"the body is over {limit} bytes")
            if length == 0:
                raise HttpError(400, "empty body")
            chunks: list[bytes] = []

            async def read() -> int:
                got = 0
                async for chunk in request.stream():
                    got += len(chunk)
                    if got > length:
                        raise HttpError(400, "the body is longer than its Content-Length")
                    chunks.append(chunk)
                return got

            try:
                got = await asyncio.wait_for(read(), self.options.read_timeout_s)
            except asyncio.TimeoutError:
                raise HttpError(408, f"the body was not received within {self.options.read_timeout_s:g} s") from None
            except ClientDisconnect:
                raise HttpError(400, "the client went away before sending its body") from None
            if got < length:
                raise HttpError(400, f"the body ended after {got} of {length} bytes")
            return b"".join(chunks)

        # -- health and metadata

        @app.get("/v2")
        async def server_metadata(self) -> dict[str, Any]:
            from ovxai import __version__

            return {"name": "ovxai", "version": __version__, "extensions": ["binary_tensor_data"]}

        @app.get("/v2/health/live")
        async def live(self) -> dict[str, Any]:
            return {"live": True}

        @app.get("/v2/health/ready")
        async def ready(self) -> dict[str, Any]:
            return {"ready": True}

        @app.get("/v2/models/{name}")
        async def metadata(self, name: str) -> dict[str, Any]:
            self.service.check_model(name)
            return self.service.model_metadata()

        @app.get("/v2/models/{name}/versions/{version}")
        async def metadata_version(self, name: str, version: str) -> dict[str, Any]:
            self.service.check_model(name, version)
            return self.service.model_metadata()

        @app.get("/v2/models/{name}/ready")
        async def model_ready(self, name: str) -> dict[str, Any]:
            self.service.check_model(name)
            return {"name": name, "ready": True}

        @app.get("/v2/models/{name}/versions/{version}/ready")
        async def model_version_ready(self, name: str, version: str) -> dict[str, Any]:
            self.service.check_model(name, version)
            return {"name": name, "ready": True}

        # -- inference

        @app.post("/v2/models/{name}/infer")
        async def infer(self, name: str, request: Request) -> Response:
            return await self._infer_route(name, None, request)

        @app.post("/v2/models/{name}/versions/{version}/infer")
        async def infer_version(self, name: str, version: str, request: Request) -> Response:
            return await self._infer_route(name, version, request)

        async def _infer_route(self, name: str, version: str | None, request: Request) -> Response:
            self.service.check_model(name, version)
            if request.headers.get("content-encoding", "identity") != "identity":
                raise HttpError(400, "compressed requests are not accepted; send the body as is")
            body = await self._body(request)
            header_length = request.headers.get("inference-header-content-length")
            # Binary tensors cost little to parse and encode: here, without a thread hop; JSON ones in a thread.
            text = (header_length or "").strip()
            if text.isascii() and text.isdigit() and int(text) <= 65536:
                parsed = self.service.parse_infer(body, header_length)
            else:
                parsed = await asyncio.to_thread(self.service.parse_infer, body, header_length)
            outputs = await self._infer(parsed.tensor)
            if all(binary for _, binary in parsed.outputs):
                data, headers = self.service.encode_infer(parsed, outputs)
            else:
                data, headers = await asyncio.to_thread(self.service.encode_infer, parsed, outputs)
            return Response(data, headers=headers)

        @app.post("/v1/explain")
        async def explain(self, request: Request) -> Response:
            top_k, targets, form = self.service.explain_query(list(request.query_params.multi_items()))
            body = await self._body(request)
            batch = await asyncio.to_thread(self.service.prepare_image, body)
            outputs = await self._infer(batch.tensor)
            data, kind = await asyncio.to_thread(self.service.explain_answer, batch, outputs, targets, top_k, form)
            return Response(data, media_type=kind)

        @app.get("/v1/info")
        async def info(self) -> dict[str, Any]:
            return self.service.info() | {"replica": self.replica, "node": self.node}

    deployment: Any = OvxaiDeployment  # a Deployment now; mypy sees the class
    return deployment.bind(options)


class _Stop(Exception):
    """SIGTERM, as an exception in the main thread."""


def deploy(
    options: ServeOptions,
    host: str = "127.0.0.1",
    port: int = 8000,
    proxy_location: str = "HeadOnly",
    route_prefix: str = "/",
) -> str:
    """Start Ray Serve's HTTP proxy (on the Ray instance this process is connected to) and run the application
    at ``route_prefix``; returns once every replica is up: the model's URL. Serve's HTTP options are the
    cluster's: where Serve already runs, its address stays what it was."""
    from ray import serve

    serve.start(
        http_options={"host": host, "port": port, "keep_alive_timeout_s": 5, "request_timeout_s": 300},
        proxy_location=proxy_location,
    )
    serve.run(
        application(options), name=options.name, route_prefix=route_prefix,
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )  # fmt: skip
    return f"http://{host}:{port}{route_prefix.rstrip('/')}/v2/models/{options.name}"


def serve_model(
    options: ServeOptions,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    proxy_location: str = "HeadOnly",
    on_ready: Callable[[str], None] | None = None,
    node_ip: str | None = None,
) -> None:
    """Deploy ``options`` on Ray Serve and keep it up until Ctrl-C or SIGTERM.

    ``address`` (else ``RAY_ADDRESS``) joins an existing Ray cluster, where only this application is
    removed at the end; without one a local Ray instance is started here (on ``node_ip``, as ``ray start
    --node-ip-address``; Ray's choice by default) and shut down at the end."""
    import ray
    from ray import serve

    address = address or os.environ.get("RAY_ADDRESS") or None
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    if in_main:
        signal.signal(signal.SIGTERM, stop)
    started = False
    try:
        if address:
            ray.init(address=address, include_dashboard=False)
        else:
            wanted = options.cpus_per_replica * (options.max_replicas or options.replicas)
            started = True
            cpus = max(os.cpu_count() or 1, math.ceil(wanted))
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, _node_ip_address=node_ip)
        if in_main:  # Ray's start may have set its own handler
            signal.signal(signal.SIGTERM, stop)
        url = deploy(options, host, port, proxy_location)
        if on_ready is not None:
            on_ready(url)
        while True:
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
        try:
            # Our own instance goes as a whole below (Ctrl-C reaches its processes too: waiting for Serve's
            # controller to drain could hang on a dead one); on another's cluster only our application goes.
            if not started and ray.is_initialized():
                serve.delete(options.name)
        except Exception as exc:  # best effort: Ray itself still stops below
            print(f"ovxai serve: warning: {type(exc).__name__} while stopping the deployment", file=sys.stderr)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if in_main:
                signal.signal(signal.SIGTERM, previous)


def check(options: ServeOptions) -> str:
    """Load the model once here, on CPU, so that every problem (a missing or unpatched model, no
    preprocessing) is one line before any Ray process starts; the preprocessing the replicas will use."""
    return ModelService(replace(options, device="CPU")).explainer.describe_preprocessing()
