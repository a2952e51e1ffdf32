"""How users get from a torch classifier to the ONNX or IR file they deploy, and the precisions they ship it in:
the route matrix of tests/integration/test_routes.py (a test-only helper, like zoo.py).

Routes (each writes an FP32 model; the last three start from the legacy exporter's ONNX file, as users do):

* ``legacy``, ``dynamo``: ``torch.onnx.export`` (TorchScript-based, and torch.export-based);
* ``ov_module``: ``ov.convert_model(module)``;
* ``ov_onnx``: ``ov.convert_model("m.onnx")``;
* ``read_model``: ``ov.Core().read_model("m.onnx")`` + ``ov.save_model`` (the route NNCF's examples take);
* ``ovc``: OpenVINO's ``ovc`` command on the ONNX file (its telemetry stubbed out, as ovxai's converter does).

Precisions: ``fp32``; for IRs ``fp16`` (weights compressed to FP16, as ``ovc`` and ``ov.save_model`` do by
default), ``int8`` (``nncf.quantize``), ``w8`` / ``w4`` (``nncf.compress_weights`` INT8, and INT4 for every
product layer, the last one included); for ONNX ``qdq`` (``onnxruntime.quantization.quantize_static``) and
``dynamic`` (``quantize_dynamic``). Calibration uses a few random images: the point is the graph each tool
writes, not the accuracy of the quantised model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ONNX_ROUTES = ("legacy", "dynamo")
IR_ROUTES = ("ov_module", "ov_onnx", "read_model", "ovc")
ONNX_PRECISIONS = ("fp32", "qdq", "dynamic")
IR_PRECISIONS = ("fp32", "fp16", "int8", "w8", "w4")
CALIBRATION = 4  # images


def calibration(size: int) -> list[np.ndarray]:
    return [np.random.default_rng(100 + k).random((1, 3, size, size), dtype=np.float32) for k in range(CALIBRATION)]


def write(net: Any, size: int, route: str, folder: Path, onnx_file: Path | None = None) -> Path:
    """The FP32 model file that ``route`` makes of ``net`` (input (?, 3, size, size)); IR routes other than
    ``ov_module`` convert ``onnx_file`` (the legacy exporter's)."""
    import openvino as ov
    import torch

    from ovxai.exporter.from_torch import to_ir, to_onnx
    from ovxai.formats.openvino import without_telemetry

    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    if route in ONNX_ROUTES:
        return to_onnx(net, folder / f"{route}.onnx", example, route)
    path = folder / f"{route}.xml"
    if route == "ov_module":
        return to_ir(net, path, example)
    assert onnx_file is not None, f"route {route} converts the legacy ONNX file"
    without_telemetry()
    if route == "ov_onnx":
        ov.save_model(ov.convert_model(os.fspath(onnx_file)), os.fspath(path), compress_to_fp16=False)
    elif route == "read_model":
        ov.save_model(ov.Core().read_model(os.fspath(onnx_file)), os.fspath(path), compress_to_fp16=False)
    elif route == "ovc":
        command = (
            "import sys; from ovxai.formats.openvino import without_telemetry; without_telemetry(); "
            "from openvino.tools.ovc.main import main; sys.argv[0] = 'ovc'; sys.exit(main())"
        )
        args = [os.fspath(onnx_file), "--output_model", os.fspath(path), "--compress_to_fp16=False"]
        subprocess.run([sys.executable, "-c", command, *args], check=True, capture_output=True)
    else:
        raise ValueError(f"unknown route {route}")
    return path


def quantize(fp32: Path, precision: str, size: int, folder: Path) -> Path:
    """``fp32`` as shipped in ``precision`` (see the module docstring); ``fp32`` itself for "fp32"."""
    if precision == "fp32":
        return fp32
    out = folder / f"{fp32.stem}-{precision}{fp32.suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fp32.suffix == ".onnx":
            _quantize_onnx(fp32, out, precision, size)
        else:
            _quantize_ir(fp32, out, precision, size)
    return out


def _quantize_ir(fp32: Path, out: Path, precision: str, size: int) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(os.fspath(fp32))
    if precision == "fp16":
        ov.save_model(model, os.fspath(out), compress_to_fp16=True)
        return
    if precision == "int8":
        model = nncf.quantize(model, nncf.Dataset(calibration(size)), subset_size=CALIBRATION)
    elif precision == "w8":
        model = nncf.compress_weights(model)
    elif precision == "w4":
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=-1, all_layers=True)
    else:
        raise ValueError(f"unknown IR precision {precision}")
    ov.save_model(model, os.fspath(out), compress_to_fp16=False)


def _quantize_onnx(fp32: Path, out: Path, precision: str, size: int) -> None:
    from onnxruntime import quantization

    if precision == "dynamic":
        # unsigned weights: ONNX Runtime's CPU ConvInteger kernel takes uint8 only
        quantization.quantize_dynamic(os.fspath(fp32), os.fspath(out), weight_type=quantization.QuantType.QUInt8)
        return
    if precision != "qdq":
        raise ValueError(f"unknown ONNX precision {precision}")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": x} for x in calibration(size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantization.quantize_static(os.fspath(fp32), os.fspath(out), Reader(), quant_format=quantization.QuantFormat.QDQ)
