"""Export a torch classifier to ONNX with a dynamic batch (and optionally dynamic H/W)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def to_onnx(net: torch.nn.Module, path: Path, size: int, exporter: str = "dynamo", dynamic_size: bool = False) -> Path:
    """Write ``path`` with input 'input' (B, 3, size, size) and output 'logits' (B, K).

    ``exporter`` is 'dynamo' (torch.export based, the default of current torch) or 'legacy'
    (TorchScript based); ovxai reads the module paths that either one records.
    """
    example = torch.rand(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims = {0: torch.export.Dim("batch")}
            if dynamic_size:
                dims |= {2: torch.export.Dim("height", min=16), 3: torch.export.Dim("width", min=16)}
            program = torch.onnx.export(
                net, (example,), input_names=["input"], output_names=["logits"], dynamic_shapes=(dims,), dynamo=True
            )
            assert program is not None
            program.save(str(path))
        elif exporter == "legacy":
            axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
            torch.onnx.export(
                net, (example,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": axes, "logits": {0: "batch"}}, opset_version=17,
            )  # fmt: skip
        else:
            raise ValueError(f"unknown exporter '{exporter}' (dynamo or legacy)")
    return path
