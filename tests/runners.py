"""Run an exported model in ONNX Runtime or OpenVINO and return its outputs by name; run the CLI expecting a
one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ovxai.cli import main


def cli_fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr naming the command, return that line."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ovxai {argv[0]}: error: "), err
    return err


def run(path: Path, x: np.ndarray, backend: str, exact: bool = True) -> dict[str, np.ndarray]:
    """``exact=False`` lets OpenVINO pick its default inference precision (bf16 on some CPUs)."""
    if backend == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"} if exact else {})
    result = compiled(x)  # an unnamed output (ov.convert_model(module) leaves some) under its position
    return {
        min(out.get_names(), default=f"output:{i}"): np.asarray(result[out]) for i, out in enumerate(compiled.outputs)
    }
