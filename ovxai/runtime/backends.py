"""Inference backends: OpenVINO (CPU, GPU, NPU, AUTO) and ONNX Runtime (execution providers)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ovxai.errors import OvxaiError, engine_reason
from ovxai.hook import FEATURE_OUTPUT, SALIENCY_OUTPUT
from ovxai.runtime import metadata

K = TypeVar("K")
Outputs = dict[str, np.ndarray]


class Session(Protocol):
    """One loaded model, ready to run."""

    input_shape: list[int | None]  # None for a dynamic dimension
    output_names: list[str]
    metadata: dict[str, str]

    def infer(self, x: np.ndarray) -> Outputs: ...

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Iterator[tuple[K, Outputs]]:
        """Several requests in flight at once; results come back in submission order."""
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
        self.metadata = (
            metadata.from_openvino(model) if path.suffix.lower() == ".xml" else metadata.from_onnx_file(path)
        )
        image = model.inputs[0]
        self.input_shape = [d.get_length() if d.is_static else None for d in image.get_partial_shape()]
        self.output_names = [_name(o) for o in model.outputs]
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
        self._ov = ov

    def infer(self, x: np.ndarray) -> Outputs:
        result = self.request.infer({0: x})
        return {_name(o): np.array(result[o], copy=True) for o in self.compiled.outputs}

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Iterator[tuple[K, Outputs]]:
        queue = self._ov.AsyncInferQueue(self.compiled, jobs)
        done: dict[int, Outputs] = {}  # filled by OpenVINO's callback threads

        def collect(request: Any, index: int) -> None:
            outputs = self.compiled.outputs
            done[index] = {_name(o): np.array(request.get_tensor(o).data, copy=True) for o in outputs}

        queue.set_callback(collect)
        keys: dict[int, K] = {}
        next_out = 0
        for index, (key, x) in enumerate(batches):
            keys[index] = key
            queue.start_async({0: x}, index)  # blocks while all `jobs` requests are busy
            while next_out in done:  # hand back finished results, in order, while others run
                yield keys.pop(next_out), done.pop(next_out)
                next_out += 1
        queue.wait_all()
        for index in range(next_out, next_out + len(keys)):
            yield keys.pop(index), done.pop(index)


def _name(output: Any) -> str:
    """A tensor may carry several names (ONNX models read directly do): prefer the ones ovxai writes."""
    names = output.get_names()
    return next((n for n in (SALIENCY_OUTPUT, FEATURE_OUTPUT) if n in names), None) or output.get_any_name()


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
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        image = self.session.get_inputs()[0]
        self.input_name = image.name
        self.input_shape = [d if isinstance(d, int) else None for d in image.shape]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, x: np.ndarray) -> Outputs:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x}), strict=True))

    def infer_many(self, batches: Iterable[tuple[K, np.ndarray]], jobs: int) -> Iterator[tuple[K, Outputs]]:
        # One session, several threads: ONNX Runtime's run() is thread-safe and releases the GIL.
        pending: deque[tuple[K, Any]] = deque()
        with ThreadPoolExecutor(jobs) as pool:
            for key, x in batches:
                pending.append((key, pool.submit(self.infer, x)))
                if len(pending) > jobs:
                    key_done, future = pending.popleft()
                    yield key_done, future.result()
            while pending:
                key_done, future = pending.popleft()
                yield key_done, future.result()
