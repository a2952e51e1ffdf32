"""Run an exported model in ONNX Runtime or OpenVINO and return its outputs by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run(path: Path, x: np.ndarray, backend: str, exact: bool = True) -> dict[str, np.ndarray]:
    """``exact=False`` lets OpenVINO pick its default inference precision (bf16 on some CPUs)."""
    if backend == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"} if exact else {})
    result = compiled(x)
    return {out.get_any_name(): np.asarray(result[out]) for out in compiled.outputs}
