"""Export straight from PyTorch: ``export_torch(module, example_input, output, layer="layer4")``.

torch is needed here only. For an ONNX output the module goes through ``torch.onnx.export``; for an
IR output through OpenVINO's own converter (``ov.convert_model``, OpenVINO's recommended PyTorch
path), into a temporary file that :func:`ovxai.export` then patches. Every path records module paths,
so ``layer`` takes the same names as ``model.named_modules()``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ovxai.errors import OvxaiError, engine_reason
from ovxai.exporter.pipeline import ExportResult, export


def to_onnx(net: Any, path: Path, example: Any, exporter: str = "dynamo", dynamic_size: bool = False) -> Path:
    """Write ``net`` to ``path`` with input 'input' and output 'logits', batch dynamic.

    ``example`` is an input tensor (B, C, H, W) or an int size (a random (2, 3, size, size) batch).
    ``exporter`` is 'dynamo' (torch.export based, current torch's default) or 'legacy' (TorchScript).
    """
    import torch

    if isinstance(example, int):
        example = torch.rand(2, 3, example, example)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            if importlib.util.find_spec("onnxscript") is None:
                raise OvxaiError("torch's ONNX exporter needs the 'onnxscript' package", "pip install onnxscript")
            dims = {0: torch.export.Dim("batch")}
            if dynamic_size:
                dims |= {2: torch.export.Dim("height", min=16), 3: torch.export.Dim("width", min=16)}
            program = torch.onnx.export(
                net, (example,), input_names=["input"], output_names=["logits"], dynamic_shapes=(dims,), dynamo=True
            )
            assert program is not None
            program.save(os.fspath(path))
        elif exporter == "legacy":
            axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
            torch.onnx.export(
                net, (example,), os.fspath(path), dynamo=False, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": axes, "logits": {0: "batch"}}, opset_version=17,
            )  # fmt: skip
        else:
            raise OvxaiError(f"unknown torch exporter '{exporter}'", "use dynamo or legacy")
    return path


def export_torch(
    module: Any, example_input: Any, output: str | os.PathLike[str], *, exporter: str = "dynamo", **options: Any
) -> ExportResult:
    """Export a torch classifier and add the explanatory hook; ``options`` are :func:`ovxai.export`'s.

    ``exporter`` ('dynamo' or 'legacy') is torch's ONNX exporter, used for an .onnx ``output``; an
    .xml ``output`` is converted by OpenVINO directly, with no ONNX step.
    """
    module = module.eval()
    with tempfile.TemporaryDirectory(prefix="ovxai-torch-") as folder:
        dynamic_size = bool(options.get("dynamic_size", False))
        if Path(output).suffix.lower() == ".xml":
            source = to_ir(module, Path(folder) / "model.xml", example_input, dynamic_size)
        else:
            source = to_onnx(module, Path(folder) / "model.onnx", example_input, exporter, dynamic_size)
        return export(source, output, **options)


def to_ir(net: Any, path: Path, example: Any, dynamic_size: bool = False) -> Path:
    """Write ``net`` to ``path`` (FP32 IR) with OpenVINO's PyTorch converter, batch dynamic.

    Its node names carry the module paths ('__module.layer4.2.relu/aten::relu/Relu').
    """
    import openvino as ov
    import torch

    from ovxai.formats.openvino import without_telemetry

    if isinstance(example, int):
        example = torch.rand(2, 3, example, example)
    dims = [-1, *example.shape[1:2], *([-1, -1] if dynamic_size else example.shape[2:])]
    without_telemetry()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            model = ov.convert_model(net, example_input=example, input=[ov.PartialShape(dims)])
        except Exception as exc:  # the converter raises its own types
            raise OvxaiError(
                f"OpenVINO could not convert the torch module: {engine_reason(exc)}", "write .onnx instead"
            ) from None
    ov.save_model(model, os.fspath(path), compress_to_fp16=False)
    return path


def load_factory(spec: str) -> Any:
    """'package.module:factory' -> the module that calling ``factory()`` returns."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise OvxaiError(
            f"--torch '{spec}' is not package.module:factory", "e.g. --torch models.architectures:resnet50"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules in the working folder import
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise OvxaiError(
            f"cannot import '{module_name}' ({exc})",
            f"run from the folder that holds the package or add it to PYTHONPATH (working folder: {os.getcwd()})",
        ) from None
    except AttributeError:
        raise OvxaiError(f"'{module_name}' has no '{attribute}'", "name a function that returns the model") from None
    return factory()
