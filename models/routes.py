"""The routes from a torch module to a file ovxai reads, in one place: each writes the model the way a user's
tool writes it (a model written by another tool is a different graph).

| route | written by | batch |
|---|---|---|
| ``to_onnx(exporter='dynamo')`` | ``torch.onnx.export(dynamo=True)`` (torch.export), torch's default | dynamic |
| ``to_onnx(exporter='legacy')`` | ``torch.onnx.export(dynamo=False)`` (TorchScript), opset 17 | dynamic |
| ``to_ir`` | OpenVINO's PyTorch converter, ``ov.convert_model(module)``, FP32 weights | dynamic |
| ``onnx_to_ir`` | ``ov.convert_model('model.onnx')``: FP16 weights (what ``ovc`` writes) or FP32 | as the ONNX |
| ``to_int8`` | NNCF post-training quantisation of an IR (``nncf.quantize``), as OpenVINO advises shipping | dynamic |

``to_onnx`` and ``to_ir`` are ovxai's own (``ovxai.exporter.from_torch``: input 'input', output 'logits', an
``example`` batch or an int size), so that tests, tools and ``ovxai export --torch`` write the same graphs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovxai.exporter.from_torch import to_ir, to_onnx

__all__ = ["EXPORTERS", "onnx_to_ir", "to_int8", "to_ir", "to_onnx"]

EXPORTERS = ("dynamo", "legacy")  # to_onnx's torch exporters


def onnx_to_ir(onnx_path: Path, xml: Path, fp16: bool = False) -> Path:
    """The ONNX model converted by OpenVINO and saved as IR, with FP16 weights (the default of ``ovc`` and
    ``ov.save_model``: what users get) or FP32 (sizes and constants compare like for like with ovxai's)."""
    import openvino as ov

    ov.save_model(ov.convert_model(os.fspath(onnx_path)), os.fspath(xml), compress_to_fp16=fp16)
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
