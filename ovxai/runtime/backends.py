"""Inference backends: OpenVINO (CPU, GPU, NPU, AUTO) and ONNX Runtime (execution providers)."""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ovxai.conventions import HOOK_OUTPUTS
from ovxai.errors import OvxaiError, engine_reason
from ovxai.metadata import ModelInfo, read_onnxruntime, read_openvino

K = TypeVar("K")
Outputs = dict[str, np.ndarray]
Stream = Generator[tuple[K, Outputs, float], None, None]
"""(key, outputs, seconds the request ran), in submission order; close() waits for what is in flight."""

_BUSY_QUEUES: set[Any] = set()  # OpenVINO AsyncInferQueues that a stream is using, see _drain_at_exit
_BUSY_LOCK = threading.Lock()


@atexit.register
def _drain_at_exit() -> None:
    """A stream its caller stopped reading (an exception in the caller's loop) is closed only when the
    interpreter finalises; a request that completes after finalisation began kills its OpenVINO thread
    inside a C++ catch-all: SIGABRT. Exit handlers run before that point: wait for them here."""
    with _BUSY_LOCK:
        busy = list(_BUSY_QUEUES)
    for queue in busy:
        queue.wait_all()


class Session(Protocol):
    """One loaded model, ready to run."""

    input_shape: list[int | None]  # None for a dynamic dimension
    output_names: list[str]
    output_shapes: dict[str, list[int | None]]
    info: ModelInfo  # what the exporter recorded: labels, preprocessing, score

    def infer(self, x: np.ndarray) -> Outputs: ...

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Stream[K]:
        """Several requests in flight at once; (key, outputs, seconds the request ran) in submission order.

        Whatever ends the iteration early (an exception in ``batches`` or in the consumer, ``close()``)
        first waits for the requests in flight: an engine torn down under running requests aborts the
        whole process."""
        ...


def open_session(
    path: Path, backend: str = "auto", device: str = "CPU", providers: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
) -> Session:  # fmt: skip
    if not path.is_file():
        raise OvxaiError(f"model file '{path}' not found", "check the --model path")
    if path.suffix.lower() not in (".xml", ".onnx"):
        raise OvxaiError(f"'{path}' is neither OpenVINO IR (.xml) nor ONNX (.onnx)", "pass the exported model")
    if backend == "auto":
        backend = "openvino" if path.suffix.lower() == ".xml" or _installed("openvino") else "onnxruntime"
    if backend == "openvino":
        return OpenVinoSession(path, device, config)
    if backend == "onnxruntime":
        if path.suffix.lower() == ".xml":
            raise OvxaiError("ONNX Runtime cannot run OpenVINO IR", "use backend 'openvino' or the .onnx export")
        return OnnxRuntimeSession(path, device, providers)
    raise OvxaiError(f"unknown backend '{backend}'", "use openvino, onnxruntime or auto")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class OpenVinoSession:
    def __init__(self, path: Path, device: str, config: dict[str, Any] | None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise OvxaiError("the OpenVINO backend needs the 'openvino' package", "pip install openvino") from None
        core = ov.Core()
        known = core.available_devices
        if device.split(":")[0] not in ("AUTO", "MULTI", "HETERO", "BATCH") and device not in known:
            raise OvxaiError(f"OpenVINO device '{device}' is not available", f"choose one of: {', '.join(known)}, AUTO")
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise OvxaiError(f"the weights file '{path.with_suffix('.bin')}' is missing", "keep it beside the .xml")
        try:
            model = core.read_model(os.fspath(path))
        except RuntimeError as exc:
            raise OvxaiError(f"cannot read '{path}': {engine_reason(exc)}", "re-export the model") from None
        self.info = read_openvino(model)  # rt_info of an IR, or an ONNX file's metadata_props
        self.input_shape = _dims(model.inputs[0].get_partial_shape())
        self.output_names = [_name(o) for o in model.outputs]
        self.output_shapes = {_name(o): _dims(o.get_partial_shape()) for o in model.outputs}
        if config is None:
            # Min-max normalisation magnifies rounding: CPU plugins that default to bf16 get f32.
            config = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {}
        try:
            self.compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise OvxaiError(
                f"cannot compile the model for {device}: {engine_reason(exc)}", _device_hint(device)
            ) from None
        self.request = self.compiled.create_infer_request()
        self.device = device
        self._ov = ov
        self._queues: list[tuple[int, Any]] = []  # idle AsyncInferQueues by size, see _take_queue
        self._lock = threading.Lock()

    def infer(self, x: np.ndarray) -> Outputs:
        result = self.request.infer({0: x})
        return {_name(o): np.array(result[o], copy=True) for o in self.compiled.outputs}

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Stream[K]:
        queue = self._take_queue(jobs)
        with _BUSY_LOCK:
            _BUSY_QUEUES.add(queue)
        done: dict[int, tuple[Outputs, float] | BaseException] = {}  # filled by OpenVINO's callback threads
        keys: dict[int, K] = {}

        def take(index: int) -> tuple[K, Outputs, float]:
            result = done.pop(index)
            if isinstance(result, BaseException):
                raise OvxaiError(f"inference failed: {engine_reason(result)}", _device_hint(self.device))
            return keys.pop(index), *result

        next_out = 0
        try:
            for index, (key, x) in enumerate(batches):
                keys[index] = key
                queue.start_async({0: x}, (done, index))  # blocks while all `jobs` requests are busy
                while next_out in done:  # hand back finished results, in order, while others run
                    yield take(next_out)
                    next_out += 1
            queue.wait_all()
            while keys:
                yield take(next_out)
                next_out += 1
        finally:
            # On every way out (an exception in `batches` or in the consumer, close()): requests still
            # running when their queue is destroyed abort the process.
            queue.wait_all()
            done.clear()
            with _BUSY_LOCK:
                _BUSY_QUEUES.discard(queue)
            with self._lock:
                self._queues.append((jobs, queue))

    def _take_queue(self, jobs: int) -> Any:
        """An idle AsyncInferQueue of ``jobs`` requests. Queues live as long as the session: OpenVINO's
        threads still hold a request for a moment after ``wait_all`` returns, and a queue destroyed in
        that moment, just before the interpreter exits, aborts it ("FATAL: exception not rethrown")."""
        with self._lock:
            for i, (size, _) in enumerate(self._queues):
                if size == jobs:
                    return self._queues.pop(i)[1]
        queue = self._ov.AsyncInferQueue(self.compiled, jobs)
        queue.set_callback(_collect)  # a module function: the queue must not hold the session (a cycle)
        return queue


def _collect(request: Any, userdata: tuple[dict[int, Any], int]) -> None:
    """AsyncInferQueue callback (OpenVINO's thread): copy the outputs out before the request is reused."""
    done, index = userdata
    try:  # an exception must not escape into OpenVINO's thread
        outputs = {_name(o): np.array(request.get_tensor(o).data, copy=True) for o in request.model_outputs}
        done[index] = (outputs, request.latency / 1000)  # the request's own run time, without queue wait
    except BaseException as exc:
        done[index] = exc


def _name(output: Any) -> str:
    """A tensor may carry several names (ONNX models read directly do): prefer the ones ovxai writes."""
    names = output.get_names()
    return next((n for n in HOOK_OUTPUTS if n in names), None) or output.get_any_name()


def _dims(shape: Any) -> list[int | None]:
    """An OpenVINO partial shape as a list, None for each dynamic dimension."""
    return [d.get_length() if d.is_static else None for d in shape]


def _device_hint(device: str) -> str:
    if device.startswith("NPU"):
        return "the NPU needs static shapes: export with --static-batch 1 --input-shape 1,3,H,W"
    return "try device CPU"


class OnnxRuntimeSession:
    def __init__(self, path: Path, device: str, providers: Sequence[str] | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise OvxaiError("the ONNX Runtime backend needs 'onnxruntime'", "pip install onnxruntime") from None
        available = ort.get_available_providers()
        wanted = list(providers or (["CPUExecutionProvider"] if device == "CPU" else []))
        if not wanted:
            raise OvxaiError(f"device '{device}' means nothing to ONNX Runtime", "pass providers=[...] instead")
        missing = [p for p in wanted if p not in available]
        if missing:
            raise OvxaiError(
                f"ONNX Runtime provider {missing[0]} is not available", f"available: {', '.join(available)}"
            )
        try:
            options = ort.SessionOptions()
            # Idle worker threads otherwise spin after each run and starve the caller's own work
            # (decoding the next image, upsampling maps) of the CPU.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(os.fspath(path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise OvxaiError(
                f"cannot load '{path}' in ONNX Runtime: {engine_reason(exc)}", "re-export the model"
            ) from None
        self.info = read_onnxruntime(self.session)
        image = self.session.get_inputs()[0]
        self.input_name = image.name
        self.input_shape = [d if isinstance(d, int) else None for d in image.shape]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {
            o.name: [d if isinstance(d, int) else None for d in o.shape] for o in self.session.get_outputs()
        }

    def infer(self, x: np.ndarray) -> Outputs:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x}), strict=True))

    def _timed(self, x: np.ndarray) -> tuple[Outputs, float]:
        start = time.perf_counter()
        return self.infer(x), time.perf_counter() - start

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Stream[K]:
        # One session, several threads: ONNX Runtime's run() is thread-safe and releases the GIL.
        pending: deque[tuple[K, Future[tuple[Outputs, float]]]] = deque()
        pool = ThreadPoolExecutor(jobs, thread_name_prefix="ovxai-ort")
        try:
            for key, x in batches:
                pending.append((key, pool.submit(self._timed, x)))
                if len(pending) > jobs:
                    key_done, future = pending.popleft()
                    yield key_done, *future.result()
            while pending:
                key_done, future = pending.popleft()
                yield key_done, *future.result()
        finally:
            # Early exit: runs not yet started are dropped, running ones finish before we return.
            pool.shutdown(wait=True, cancel_futures=True)
