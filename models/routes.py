"""The routes from a torch module to a file ovxai reads, in one place: each writes the model the way a user's
tool writes it (a model written by another tool is a different graph).

| route | written by | batch |
|---|---|---|
| ``to_onnx(exporter='dynamo')`` | ``torch.onnx.export(dynamo=True)`` (torch.export), torch's default | dynamic |
| ``to_onnx(exporter='legacy')`` | ``torch.onnx.export(dynamo=False)`` (TorchScript), opset 17 | dynamic |
| ``to_ir`` | OpenVINO's PyTorch converter, ``ov.convert_model(module)``, FP32 weights | dynamic |
| ``onnx_to_ir`` | ``ov.convert_model('model.onnx')``: FP16 weights (what ``ovc`` writes) or FP32 | as the ONNX |
| ``to_int8`` | NNCF post-training quantisation of an IR (``nncf.quantize``), as OpenVINO advises shipping | dynamic |

The route matrix (``write``, ``quantize``: tests/integration/test_routes.py, tools/bench_routes.py) names each way a
user gets from a torch classifier to the file they deploy; every route writes FP32 weights, and the IR routes other
than ``ov_module`` start from the legacy exporter's ONNX file, as users do:

* ``legacy``, ``dynamo``: ``torch.onnx.export`` (TorchScript-based, and torch.export-based);
* ``ov_module``: ``ov.convert_model(module)``;
* ``ov_onnx``: ``ov.convert_model("m.onnx")``;
* ``read_model``: ``ov.Core().read_model("m.onnx")`` + ``ov.save_model`` (the route NNCF's examples take);
* ``ovc``: OpenVINO's ``ovc`` command on the ONNX file (its telemetry off, as ovxai's converter has it).

Precisions: ``fp32``; for IRs ``fp16`` (weights compressed to FP16, as ``ovc`` and ``ov.save_model`` do by
default), ``int8`` (``nncf.quantize``), ``w8`` / ``w4`` (``nncf.compress_weights`` INT8, and INT4 for every
product layer, the last one included); for ONNX ``qdq`` (``onnxruntime.quantization.quantize_static``) and
``dynamic`` (``quantize_dynamic``). Calibration uses a few random images: the point is the graph each tool
writes, not the accuracy of the quantised model.

``to_onnx`` and ``to_ir`` are ovxai's own (``ovxai.exporter.from_torch``: input 'input', output 'logits', an
``example`` batch or an int size), so that tests, tools and ``ovxai export --torch`` write the same graphs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovxai.exporter.from_torch import to_ir, to_onnx

__all__ = [
    "EXPORTERS",
    "calibration",
    "onnx_to_ir",
    "quantize",
    "read_model_ir",
    "to_int8",
    "to_ir",
    "to_onnx",
    "write",
]

EXPORTERS = ("dynamo", "legacy")  # to_onnx's torch exporters
ONNX_ROUTES = ("legacy", "dynamo")
IR_ROUTES = ("ov_module", "ov_onnx", "read_model", "ovc")
ONNX_PRECISIONS = ("fp32", "qdq", "dynamic")
IR_PRECISIONS = ("fp32", "fp16", "int8", "w8", "w4")
CALIBRATION = 4  # images


def onnx_to_ir(onnx_path: Path, xml: Path, fp16: bool = False) -> Path:
    """The ONNX model converted by OpenVINO and saved as IR, with FP16 weights (the default of ``ovc`` and
    ``ov.save_model``: what users get) or FP32 (sizes and constants compare like for like with ovxai's)."""
    import openvino as ov

    ov.save_model(ov.convert_model(os.fspath(onnx_path)), os.fspath(xml), compress_to_fp16=fp16)
    return xml


def read_model_ir(onnx_path: Path, xml: Path) -> Path:
    """The ONNX model read by OpenVINO's ONNX frontend and saved as IR with FP32 weights: the route NNCF's examples
    take (``ov.Core().read_model`` + ``ov.save_model``), whose graph spells shapes as that frontend does."""
    import openvino as ov

    ov.save_model(ov.Core().read_model(os.fspath(onnx_path)), os.fspath(xml), compress_to_fp16=False)
    return xml


def to_int8(source: Path, calibration: Sequence[Any], path: Path) -> Path:
    """``source`` (an IR) quantised to INT8 by NNCF on ``calibration`` (a list of input batches, every one of
    them used); the input's batch is freed first, so that the quantised model takes any batch."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(os.fspath(source))
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *calibration[0].shape[1:]])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), subset_size=len(calibration))
    ov.save_model(quantized, os.fspath(path))
    return path


def calibration(size: int) -> list[np.ndarray]:
    return [np.random.default_rng(100 + k).random((1, 3, size, size), dtype=np.float32) for k in range(CALIBRATION)]


def write(net: Any, size: int, route: str, folder: Path, onnx_file: Path | None = None) -> Path:
    """The FP32 model file that ``route`` makes of ``net`` (input (?, 3, size, size)); IR routes other than
    ``ov_module`` convert ``onnx_file`` (the legacy exporter's)."""
    import torch

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
        onnx_to_ir(onnx_file, path)
    elif route == "read_model":
        read_model_ir(onnx_file, path)
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

    if precision == "int8":
        to_int8(fp32, calibration(size), out)
        return
    model = ov.Core().read_model(os.fspath(fp32))
    if precision == "fp16":
        ov.save_model(model, os.fspath(out), compress_to_fp16=True)
        return
    if precision == "w8":
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
