"""The route matrix (issue 19): whatever tool wrote the model and whatever precision it ships in, the export explains
the same layer on the same path as the canonical route, the prediction output stays the original's bit for bit
(in ONNX Runtime, and in OpenVINO at f32 and at the CPU plugin's default precision), and the maps match the torch
oracle (float32 models, within the case's own float32 error), follow FP16 weights' rounding, or follow the FP32
maps (quantised models).

Routes and precisions are models/routes.py's. Three small CNNs: a ResNet (residual blocks, a global pool), an
EfficientNet (SiLU, squeeze-excite blocks with their own pools), a VGG (a linear head over a 2 x 2 map); and
Hugging Face ``transformers``' CNN classes from small random-weight configs through the three torch routes. Every
model file is written once per session and shared by its cells; the export's own check (the original beside the
patched model, both precisions) runs in every cell, and each cell checks again independently.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # skipped, not failed, without torch
from oracle import NOISE_FACTOR, Reference, close, reference, reference_saliency
from runners import run
from torch import nn

from models import hf, routes, zoo
from ovxai import HookOptions, export
from ovxai.errors import OvxaiError
from ovxai.exporter.pipeline import ExportResult

BATCH = 3
QUANTISED = ("int8", "w8", "w4", "qdq", "dynamic")
# How closely a quantised model's maps follow the FP32 model's (Pearson r over all maps): the quantisation's effect
# on these small random-weight models (the hook itself is exact on them: tests/integration/test_deployed.py
# compares the shortcut with the mosaic), not rounding, so no CPU moves it. Weight-only INT8 and dynamic
# quantisation keep the activations in float: closer.
MIN_CORRELATION = {"int8": 0.8, "qdq": 0.8, "w4": 0.8, "w8": 0.95, "dynamic": 0.95}


@dataclass(frozen=True)
class Model:
    factory: Any
    size: int
    quantised_path: str | None = None  # the path a quantised weight gives, where it differs from the float one


def _models() -> dict[str, Model]:
    from models import architectures as arch

    return {
        "resnet": Model(arch.tiny_resnet, 64),
        "effnet": Model(arch.TinyEfficientNet, 64),
        # a quantised linear layer runs in the engine's own kernel: the linear shortcut's reordered sums would not be
        # the same, so the mosaic is taken (README, How the hook works)
        "vgg": Model(arch.VGG, 32, quantised_path="mosaic"),
    }


@dataclass
class Built:
    net: nn.Module
    size: int
    folder: Path
    images: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)  # route -> the FP32 model file
    sources: dict[tuple[str, str], Path] = field(default_factory=dict)  # (route, precision) -> the shipped file
    exports: dict[tuple[str, str], ExportResult] = field(default_factory=dict)
    reference: Reference | None = None
    fp16_shift: float | None = None

    def file(self, route: str) -> Path:
        if route not in self.files:
            legacy = self.file("legacy") if route not in (*routes.ONNX_ROUTES, "ov_module") else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.files[route] = routes.write(self.net, self.size, route, self.folder, legacy)
        return self.files[route]

    def source(self, route: str, precision: str) -> Path:
        if (route, precision) not in self.sources:
            self.sources[(route, precision)] = routes.quantize(self.file(route), precision, self.size, self.folder)
        return self.sources[(route, precision)]

    def exported(self, route: str, precision: str) -> ExportResult:
        """The automatic target, logits scores; FP16 models written with FP16 weights, as the export's default."""
        if (route, precision) not in self.exports:
            source = self.source(route, precision)
            out = self.folder / f"xai-{route}-{precision}{source.suffix}"
            options = HookOptions(score="logits")
            self.exports[(route, precision)] = export(source, out, options=options, fp16=precision == "fp16")
        return self.exports[(route, precision)]

    def oracle(self, layer: str) -> Reference:
        if self.reference is None:
            self.reference = reference(self.net, layer, self.images, score="logits")
        return self.reference

    def fp16_rounding(self, layer: str) -> float:
        """How far FP16 weights move the exact maps: the oracle of the network with every weight rounded to FP16."""
        if self.fp16_shift is None:
            rounded = copy.deepcopy(self.net)
            with torch.no_grad():
                for tensor in [*rounded.parameters(), *rounded.buffers()]:
                    if tensor.is_floating_point():
                        tensor.copy_(tensor.half().float())
            maps = reference_saliency(rounded.double(), layer, self.images.astype(np.float64), score="logits")
            self.fp16_shift = float(np.abs(maps - self.oracle(layer).maps).max())
        return self.fp16_shift


@pytest.fixture(scope="session")
def route_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            spec = _models()[name]
            torch.manual_seed(0)
            from models import architectures as arch

            net = zoo.randomize(arch.randomize(spec.factory()), spec.size)
            images = np.random.default_rng(2).random((BATCH, 3, spec.size, spec.size), dtype=np.float32)
            cache[name] = Built(net, spec.size, tmp_path_factory.mktemp(f"routes-{name}"), images)
        return cache[name]

    return get


# Every route once at FP32 on the ResNet, every shipped precision once, each model on the routes that differ for it
# (the EfficientNet's squeeze-excite pools through read_model; the VGG's linear head, declined on a compressed weight).
CELLS = (
    *(("resnet", route, "fp32") for route in (*routes.ONNX_ROUTES, *routes.IR_ROUTES)),
    ("resnet", "legacy", "qdq"), ("resnet", "dynamo", "dynamic"), ("resnet", "ov_onnx", "fp16"),
    ("resnet", "read_model", "int8"), ("resnet", "read_model", "w8"), ("resnet", "ovc", "w4"),
    ("effnet", "legacy", "fp32"), ("effnet", "read_model", "fp32"), ("effnet", "read_model", "int8"),
    ("vgg", "ov_module", "fp32"), ("vgg", "read_model", "w8"), ("vgg", "ov_module", "fp16"),
)  # fmt: skip
FAST = {("resnet", "read_model", "int8"), ("resnet", "legacy", "fp32"), ("vgg", "ov_module", "fp16")}


def _cells() -> list[Any]:
    return [pytest.param(*cell, id="-".join(cell), marks=() if cell in FAST else (pytest.mark.slow,)) for cell in CELLS]


@pytest.mark.parametrize(("name", "route", "precision"), _cells())
def test_route(route_models: Any, name: str, route: str, precision: str) -> None:
    built = route_models(name)
    canonical = built.exported("legacy", "fp32")
    result = built.exported(route, precision)
    spec = _models()[name]
    expected = spec.quantised_path if precision in QUANTISED and spec.quantised_path else canonical.path
    assert (result.target.layer, result.path) == (canonical.target.layer, expected)
    source = built.source(route, precision)
    backend = "onnxruntime" if source.suffix == ".onnx" else "openvino"
    got = _same_prediction(source, result, built.images, backend)
    oracle = built.oracle(canonical.target.layer)
    if precision == "fp32":
        oracle.check(got, f"{route} maps")
    elif precision == "fp16":  # the weights' rounding moves the maps; the engine's float32 error comes on top
        close(got, oracle.maps, NOISE_FACTOR * built.fp16_rounding(canonical.target.layer) + oracle.tolerance)
    else:
        r = float(np.corrcoef(got.ravel(), oracle.maps.ravel())[0, 1])
        assert r >= MIN_CORRELATION[precision], f"{precision} maps follow the FP32 maps with r = {r:.3f}"


def _same_prediction(source: Path, result: ExportResult, images: np.ndarray, backend: str) -> np.ndarray:
    """The patched model's prediction is the source's (bit for bit; the linear shortcut: to its summation order) in
    ONNX Runtime, or in OpenVINO at f32 and at the plugin's default precision; its f32 maps."""
    maps = None
    for exact in (True, False) if backend == "openvino" else (True,):
        plain, patched = run(source, images, backend, exact), run(result.files[0], images, backend, exact)
        want = next(iter(plain.values()))  # the source's only output, named or not
        have = patched[result.prediction] if result.prediction in patched else next(iter(patched.values()))
        if result.path == "linear":  # float32 at f32, bfloat16 at most at the default precision
            bits = 23 if exact else 7
            close(have, want, 2.0 ** -(bits - 4) * float(np.abs(want).max()), "prediction")
        else:
            np.testing.assert_array_equal(have, want)
        maps = patched["saliency_map"] if exact else maps
    assert maps is not None
    return maps


# -- Hugging Face transformers' CNN classes -----------------------------------------------------------------------

HF_SIZE = 64  # models/hf.py's CNN classes take 64 x 64 images
# Each class through one torch route (the routes rotate): the legacy exporter's file is the canonical one of each.
HF_CELLS = (("resnet", "dynamo"), ("convnext", "ov_module"), ("efficientnet", "legacy"), ("mobilenet_v1", "dynamo"),
            ("mobilenet_v2", "ov_module"), ("regnet", "dynamo"), ("efficientnet", "ov_module"))  # fmt: skip
# OpenVINO's PyTorch frontend cannot convert an AvgPool2d whose kernel is larger than the map (no ovxai step runs)
HF_UNCONVERTIBLE = {("efficientnet", "ov_module")}


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            images = np.random.default_rng(2).random((BATCH, 3, HF_SIZE, HF_SIZE), dtype=np.float32)
            net = getattr(hf, name)()  # EfficientNet's pooler: an AvgPool2d with a kernel larger than the map
            cache[name] = Built(net, HF_SIZE, tmp_path_factory.mktemp(f"hf-{name}"), images)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(("name", "route"), HF_CELLS, ids=["-".join(c) for c in HF_CELLS])
def test_hugging_face_cnn(hf_models: Any, name: str, route: str) -> None:
    built = hf_models(name)
    if (name, route) in HF_UNCONVERTIBLE:
        with pytest.raises(OvxaiError, match="could not convert the torch module"):
            built.file(route)
        return
    canonical = built.exported("legacy", "fp32")
    result = built.exported(route, "fp32")
    assert result.target.n is not None and result.target.n > 1, f"a degenerate target: {result.target}"
    assert (result.target.layer, result.path) == (canonical.target.layer, "mean")
    source = built.source(route, "fp32")
    backend = "onnxruntime" if source.suffix == ".onnx" else "openvino"
    got = _same_prediction(source, result, built.images, backend)
    built.oracle(canonical.target.layer).check(got, f"{name} via {route}")
