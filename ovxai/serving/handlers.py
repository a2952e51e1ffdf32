"""The request handlers every hosting shares: the model, its batcher, admission control, and what each endpoint
answers. The REST app (``rest.py``) and the gRPC servicer (``grpc_service.py``) call these; the embedded server
and the Ray Serve deployment host those two, so a request is handled by the same code whichever hosts it.

Memory is bounded per request (``max_body``, ``max_pixels``, ``max_response``) and across requests: each
admitted request counts what its body will take in memory (``protocol.memory_cost``), and past ``max_in_flight``
a request is answered 503 with a retry hint before its body is read; image decoding, whose memory follows the
pixels rather than the bytes, runs at most ``_DECODERS`` at a time. After a burst, freed memory goes back to the
system (glibc keeps it otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from ovxai import __version__
from ovxai.conventions import CLASSES_OUTPUT, SALIENCY_OUTPUT
from ovxai.errors import OvxaiError
from ovxai.metadata import ModelInfo, as_parameters
from ovxai.runtime import Batch, Explainer, Targets, check_targets, parse_targets, pictures
from ovxai.runtime.backends import Outputs, Session, open_session
from ovxai.runtime.images import ImageError, load_rgb
from ovxai.serving import protocol
from ovxai.serving.batching import Batcher
from ovxai.serving.options import ServeOptions
from ovxai.serving.protocol import ModelSpec, ProtocolError, TensorSpec

EXPLAIN_PARAMETERS = ("top_k", "targets", "format")
_PLATFORMS = {"OpenVinoSession": "openvino", "OnnxRuntimeSession": "onnxruntime_onnx"}
_DECODERS = max(1, min(4, os.cpu_count() or 1))  # images decoded at once: each may take max_pixels x 3 bytes
_TRIM_AFTER = 64 * 1024 * 1024  # a burst past this many admitted bytes gives freed memory back when it ends


class Handlers:
    """One model served: what every endpoint of either protocol does, without a transport."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.name = options.name
        self._explainer: Explainer | None = None
        session: Session
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
        self.platform = _PLATFORMS.get(type(session).__name__, "ovxai")
        self.spec = ModelSpec(
            options.name,
            TensorSpec(session.input_name, protocol.datatype(session.input_dtype), protocol.dims(session.input_shape)),
            [TensorSpec(n, protocol.datatype(session.output_dtypes[n]), self._output_dims(n))
             for n in session.output_names],
        )  # fmt: skip
        self.batcher = Batcher(session, options.max_batch_size, options.batch_wait_ms / 1000)
        self.ready = True  # false while draining: health/ready says so, load balancers stop sending
        self.in_flight = 0  # weighted bytes of the requests admitted now
        self._burst = 0  # the most admitted at once since memory was last given back
        self._decoders: asyncio.Semaphore | None = None

    def _output_dims(self, name: str) -> list[int]:
        """An output's shape for metadata; the saliency map's class axis is K when the model fixes it."""
        shape = protocol.dims(self.session.output_shapes[name])
        explainer = self._explainer
        if name != SALIENCY_OUTPUT or len(shape) < 2 or shape[1] != -1 or explainer is None:
            return shape
        explained = explainer.explained or ""  # recorded at export: 'all', 'topK' or class ids '281,285'
        if CLASSES_OUTPUT not in self.session.output_names and explainer.num_classes:
            shape[1] = explainer.num_classes  # every class mapped
        elif re.fullmatch(r"top\d+", explained):
            shape[1] = int(explained[3:])
        elif re.fullmatch(r"\d+(,\d+)*", explained.replace(" ", "")):
            shape[1] = len(explained.split(","))
        return shape

    @property
    def explainer(self) -> Explainer:
        if self._explainer is None:
            raise ProtocolError(404, f"'{self.name}' is served over the Open Inference Protocol (/v2) only")
        return self._explainer

    def close(self) -> None:
        self.batcher.close()

    # -- admission ------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def admitted(self, cost: int) -> AsyncIterator[None]:
        """Hold ``cost`` bytes of the in-flight budget for a request, or refuse it with 503 (one request alone is
        always admitted: the per-request limits bound it)."""
        if self.in_flight and self.in_flight + cost > self.options.max_in_flight:
            busy = f"the server is busy: {self.in_flight // 2**20} MiB of requests in flight"
            raise ProtocolError(503, f"{busy}; retry shortly")
        self.in_flight += cost
        self._burst = max(self._burst, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= cost
            if not self.in_flight and self._burst > _TRIM_AFTER:
                self._burst = 0
                _give_memory_back()

    # -- metadata -------------------------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "ovxai", "version": __version__, "extensions": ["binary_tensor_data"]}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self.spec.check_model(name, version)
        return {
            "name": self.name,
            "versions": [protocol.VERSION],
            "platform": self.platform,
            "inputs": [self.spec.input.as_dict()],
            "outputs": [o.as_dict() for o in self.spec.outputs],
            "parameters": self.parameters,
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.spec.check_model(name, version)
        return self.ready

    def info(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "model": self.name,
            "file": Path(self.options.model).name,
            "device": self.options.device,
            "backend": self.platform,
            "max_batch_size": self.batcher.max_batch_size,
            "batch_wait_ms": self.options.batch_wait_ms,
            "pid": os.getpid(),
            "served": self.batcher.served.as_dict(),
            "in_flight_bytes": self.in_flight,
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

    # -- inference ------------------------------------------------------------------------------------------

    async def infer(self, request: protocol.InferRequest) -> Outputs:
        """The model's outputs for a parsed request (its images decoded and preprocessed first)."""
        if request.tensor is not None:
            outputs, _ = await self.batcher.run(request.tensor)
            return outputs
        if not request.images:
            raise ProtocolError(400, "the BYTES input holds no image")
        batches = await asyncio.gather(*(self.prepare_image(image) for image in request.images))
        results = await asyncio.gather(*(self._run(batch) for batch in batches))
        if len(results) == 1:
            return results[0][0]
        return {k: np.concatenate([r[0][k] for r in results]) for k in results[0][0]}

    async def infer_rest(self, body: bytes, header_length: str | None) -> tuple[bytes, dict[str, str]]:
        """A REST ``/infer`` body in, (answer body, headers) out."""
        # Binary tensors cost little to parse and encode: on the loop; JSON ones in a thread.
        text = (header_length or "").strip()
        small = text.isascii() and text.isdigit() and int(text) <= 65536
        max_bytes = self.options.max_body
        if small:
            parsed = protocol.parse_rest(body, header_length, self.spec, max_bytes)
        else:
            parsed = await asyncio.to_thread(protocol.parse_rest, body, header_length, self.spec, max_bytes)
        outputs = await self.infer(parsed)
        protocol.check_response_size(parsed, outputs, self.options.max_response)
        if all(binary for _, binary in parsed.outputs):
            return protocol.encode_rest(self.spec, parsed, outputs)
        return await asyncio.to_thread(protocol.encode_rest, self.spec, parsed, outputs)

    async def infer_grpc(self, message: Any, response: Any) -> Any:
        """A ``ModelInferRequest`` in, the ``ModelInferResponse`` given filled."""
        self.spec.check_model(message.model_name, message.model_version)
        parsed = protocol.parse_grpc(message, self.spec, self.options.max_body)
        outputs = await self.infer(parsed)
        protocol.check_response_size(parsed, outputs, self.options.max_response)
        return protocol.encode_grpc(response, self.spec, parsed, outputs)

    async def _run(self, batch: Batch) -> tuple[Outputs, float]:
        """A prepared batch's outputs, its rows only (a fixed-batch model runs it padded)."""
        tensor = batch.tensor if self.batcher.static_batch else batch.tensor[: len(batch)]
        outputs, seconds = await self.batcher.run(tensor)
        return {k: v[: len(batch)] for k, v in outputs.items()}, seconds

    # -- explanations -----------------------------------------------------------------------------------------

    async def prepare_image(self, data: bytes) -> Batch:
        """Decode (refusing images over ``max_pixels`` before decoding them) and preprocess, off the loop."""
        if self._decoders is None:
            self._decoders = asyncio.Semaphore(_DECODERS)
        async with self._decoders:
            return await asyncio.to_thread(self._prepare, data)

    def _prepare(self, data: bytes) -> Batch:
        try:
            _, image = load_rgb(data, max_pixels=self.options.max_pixels)
            return self.explainer.prepare(image)
        except ImageError as exc:
            raise ProtocolError(400, str(exc).replace("'<bytes>'", "the upload")) from None

    def explain_query(self, pairs: Sequence[tuple[str, str]]) -> tuple[int, Targets, str]:
        """(top_k, targets, format) from ``/v1/explain``'s query string; 400 naming the bad parameter."""
        unknown = sorted({k for k, _ in pairs} - set(EXPLAIN_PARAMETERS))
        if unknown:
            raise ProtocolError(400, f"unknown parameter '{unknown[0][:40]}'; use {', '.join(EXPLAIN_PARAMETERS)}")
        query = dict(pairs)  # the last value of each
        form = query.get("format", "json")
        if form != "json":
            try:
                form = pictures.check_format(form)
            except OvxaiError:
                raise ProtocolError(400, f"format '{form[:20]}' is unknown; use json, png, jpeg or webp") from None
        top_k, targets = self._choice(query.get("top_k", "5"), query.get("targets", "top1"))
        return top_k, targets, form

    def _choice(self, top_k: object, targets: object) -> tuple[int, Targets]:
        text = str(top_k)
        if isinstance(top_k, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ProtocolError(400, f"top_k '{text[:20]}' is not a count of 1 or more; e.g. top_k=5")
        try:
            chosen: Targets = parse_targets(targets[:1000]) if isinstance(targets, str) else None
            if chosen is None:
                if not isinstance(targets, list):
                    raise OvxaiError("targets must be 'topK' or a list of class ids", "e.g. top1 or [281, 285]")
                chosen = targets
            check_targets(chosen, self.explainer.num_classes)
        except OvxaiError as exc:
            raise ProtocolError(400, str(exc)) from None
        return int(text), chosen

    async def explain(self, pairs: Sequence[tuple[str, str]], body: bytes) -> tuple[bytes, str]:
        """``POST /v1/explain``: one image's file bytes in; (answer, content type) out."""
        top_k, targets, form = self.explain_query(pairs)
        answer = await self._explained(body, targets, top_k, form)
        if isinstance(answer, bytes):
            return answer, pictures.MEDIA_TYPES[form]
        answer["image"] = "upload"
        return json.dumps(answer, allow_nan=False).encode(), "application/json"

    async def explain_kserve(self, name: str, body: bytes) -> bytes:
        """KServe's v1 explain verb: ``{"instances": [...]}`` with base64 images (a string, ``{"b64": ...}`` or
        ``{"image_bytes": {"b64": ...}}`` each; ``"parameters": {"top_k", "targets"}`` optional) in; the top
        prediction of each (``predictions``) and its full explanation (``explanations``) out."""
        self.spec.check_model(name)
        request = await asyncio.to_thread(protocol.load_json, body, "the request")
        if not isinstance(request, dict) or not isinstance(request.get("instances"), list) or not request["instances"]:
            raise ProtocolError(400, 'the request has no "instances" list; send {"instances": [{"b64": "<image>"}]}')
        parameters = request.get("parameters", {})
        if not isinstance(parameters, dict) or set(parameters) - {"top_k", "targets"}:
            raise ProtocolError(400, 'the "parameters" may hold only top_k and targets')
        top_k, targets = self._choice(parameters.get("top_k", 5), parameters.get("targets", "top1"))
        images = [_instance_bytes(item, i) for i, item in enumerate(request["instances"])]
        answers = await asyncio.gather(*(self._explained(image, targets, top_k, "json") for image in images))
        explanations = [a for a in answers if isinstance(a, dict)]
        predictions = [e["top"][0]["class_id"] for e in explanations]
        return json.dumps({"predictions": predictions, "explanations": explanations}, allow_nan=False).encode()

    async def _explained(self, image: bytes, targets: Targets, top_k: int, form: str) -> dict[str, Any] | bytes:
        batch = await self.prepare_image(image)
        outputs, seconds = await self._run(batch)
        return await asyncio.to_thread(self._answer, batch, outputs, targets, top_k, form, seconds)

    def _answer(
        self, batch: Batch, outputs: Outputs, targets: Targets, top_k: int, form: str, seconds: float
    ) -> dict[str, Any] | bytes:
        try:
            (result,) = self.explainer.postprocess(batch, outputs, targets, top_k, inference_s=seconds)
        except OvxaiError as exc:  # a class id beyond a model whose class count shows only now
            raise ProtocolError(400, str(exc)) from None
        if form != "json":  # only the drawn map is resized; the fast encoder releases the GIL
            return pictures.encode(result.overlay(0), form)
        if not np.isfinite(result.maps).all() or not np.isfinite(result.scores).all():
            raise ProtocolError(500, "the model's answer holds NaN or infinite values")
        answer = result.summary()
        answer["saliency"] = np.round(result.maps.astype(np.float64), 4).tolist()
        return answer


def _instance_bytes(item: Any, index: int) -> bytes:
    """One KServe v1 instance's image bytes."""
    text = item
    if isinstance(item, dict):
        nested = item.get("image_bytes")
        text = item.get("b64", nested.get("b64") if isinstance(nested, dict) else None)
    if not isinstance(text, str):
        raise ProtocolError(400, f'instance {index} is not a base64 image; send "<base64>" or {{"b64": "<base64>"}}')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(400, f"instance {index} is not valid base64") from None


def _give_memory_back() -> None:
    """Return the heap's free pages to the system (glibc only; elsewhere a no-op)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
