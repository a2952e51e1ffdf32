"""OpenVINO adapter: turn the patched ONNX model into OpenVINO IR (.xml + .bin)."""

from __future__ import annotations

import os
from pathlib import Path

from ovxai.errors import OvxaiError


def save_ir_from_onnx(onnx_path: Path, xml_path: Path) -> list[Path]:
    """Convert ``onnx_path`` and write ``xml_path`` plus its .bin; returns the written files."""
    try:
        import openvino as ov
    except ImportError:
        raise OvxaiError("writing OpenVINO IR needs the 'openvino' package", "pip install openvino") from None
    try:
        model = ov.convert_model(os.fspath(onnx_path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OvxaiError(f"OpenVINO could not convert the patched model: {first}", "write .onnx instead") from None
    # FP32 weights keep the saliency within 1e-4 of the reference; FP16 IR is a separate choice.
    ov.save_model(model, os.fspath(xml_path), compress_to_fp16=False)
    return [xml_path, xml_path.with_suffix(".bin")]
