"""The gradient CAMs exported into the graph, on real architectures (random weights, tests/zoo.py), against the
reference implementations on the same weights: pytorch-grad-cam for Grad-CAM, Grad-CAM++, XGrad-CAM and LayerCAM,
tools/eval's Integrated Grad-CAM (tests/oracle.py), through ONNX Runtime and OpenVINO (f32), batch 2.

Each architecture is explained at its last stage and inside the network, on both engines: four cells, each with one
method, rotated so that every architecture meets every method and every method both engines. The tolerance is the
case's own float32 error: the reference run in float32 and in float64, 8 times their largest difference (16 float32
epsilons at least). The prediction output stays the plain model's: bit for bit on ONNX Runtime, to 1e-5 on OpenVINO.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
for _package in ("torchvision", "timm", "pytorch_grad_cam"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"the gradient matrix needs {_package} (the dev extra)", allow_module_level=True)

from conftest import build_net
from oracle import gradient_reference, normalised
from runners import run

from models import zoo
from ovxai import HookOptions, export
from ovxai.exporter.from_torch import to_onnx
from ovxai.formats.openvino import OPENVINO
from ovxai.metadata import ModelInfo

BATCH = 2
BACKENDS = ("onnxruntime", "openvino")
METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam")
MEAN, SCALE = 127.5, 64.0  # Integrated Grad-CAM's black image is -MEAN / SCALE in every channel


@dataclass(frozen=True)
class Case:
    model: str
    library: str  # torchvision, timm, or repo (models/architectures.py through tests/conftest.py)
    size: int
    targets: tuple[str, str]  # the last stage, one inside the network
    exporter: str = "legacy"
    slow: bool = False
    methods: tuple[str, ...] = METHODS  # the methods its cells rotate through


CASES = [
    Case("resnet18", "torchvision", 64, ("layer4", "layer3")),
    Case("mobilenet_v3_small", "torchvision", 64, ("features", "features.8")),  # squeeze-excitation, hardswish
    Case("vgg", "repo", 32, ("features", "features.7")),  # max pools, a flatten and an MLP head
    Case("efficientnet_b0", "torchvision", 64, ("features", "features.5"), slow=True),  # SiLU and SE
    # the last dense block, then norm5 (torch's in-place ReLU after 'features' rewrites that module's output)
    Case("densenet121", "torchvision", 64, ("features.denseblock4", "features.denseblock4.denselayer8"), slow=True),
    # LayerNorm, GELU, layer scale; with random weights Grad-CAM++'s and LayerCAM's maps are zero here (the positive
    # weights meet negative stage outputs): the cells take the two signed methods
    Case("convnext_tiny", "torchvision", 64, ("features", "features.5"), slow=True, methods=("gradcam", "xgradcam")),
    Case("fastvit_sa12", "timm", 64, ("final_conv", "stages.2"), slow=True),  # a hybrid: attention in stages.3
]


@dataclass
class Built:
    net: Any
    onnx: Path
    images: np.ndarray
    plain: dict[str, np.ndarray] = field(default_factory=dict)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("gradient")
    cache: dict[str, Built] = {}

    def get(case: Case) -> Built:
        if case.model not in cache:
            if case.library == "repo":
                net = build_net(case.model)
            else:
                build = zoo.build_torchvision if case.library == "torchvision" else zoo.build_timm
                net = build(case.model, case.size)
            example = torch.rand(BATCH, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
            path = to_onnx(net, folder / f"{case.model}.onnx", example, case.exporter)
            images = np.random.default_rng(2).random((BATCH, 3, case.size, case.size), dtype=np.float32)
            cache[case.model] = Built(net, path, images)
        return cache[case.model]

    return get


def _cells() -> list[Any]:
    cells = []
    for c, case in enumerate(CASES):
        for j, (target, backend) in enumerate((t, b) for t in case.targets for b in BACKENDS):
            method = case.methods[(c + j) % len(case.methods)]
            marks = [pytest.mark.slow] if case.slow else []
            name = f"{case.model}-{target}-{backend}-{method}"
            cells.append(pytest.param(case, target, backend, {"method": method}, id=name, marks=marks))
    resnet, vgg = CASES[0], CASES[2]
    more = [
        (resnet, "layer4", "onnxruntime", {"method": "gradcam++", "score": "softmax", "explain": "3,7"}, False),
        (vgg, "features", "openvino", {"method": "xgradcam", "explain": "all"}, False),
        (resnet, "layer3", "onnxruntime", {"method": "integrated-gradcam", "steps": 4, "explain": "top1"}, False),
        (resnet, "layer3", "openvino", {"method": "integrated-gradcam", "steps": 4, "explain": "top1"}, True),
        (CASES[1], "features.8", "openvino", {"method": "integrated-gradcam", "steps": 3}, True),
        # the size free at run time: transposed convolutions cropped to the input's size, counts from shapes
        (resnet, "layer3", "onnxruntime", {"method": "layercam", "dynamic_size": True}, False),
        # OpenVINO's own IR in and out: its op types (GroupConvolution, HSwish, MatMul with transpose_b, ...)
        (resnet, "layer3", "openvino", {"method": "gradcam", "source": "ir"}, False),
        (CASES[1], "features.8", "openvino", {"method": "gradcam++", "source": "ir"}, True),
    ]
    for case, target, backend, options, slow in more:
        name = "-".join(str(v) if not isinstance(v, bool) else k for k, v in options.items())
        cells.append(pytest.param(case, target, backend, options, id=f"{case.model}-{target}-{backend}-{name}",
                                  marks=[pytest.mark.slow] if slow else []))  # fmt: skip
    return cells


@pytest.mark.parametrize(("case", "target", "backend", "options"), _cells())
def test_maps_equal_the_reference_and_the_prediction_is_kept(
    models: Any, tmp_path: Path, case: Case, target: str, backend: str, options: dict[str, Any]
) -> None:
    built = models(case)
    options = dict(options)
    dynamic, source = options.pop("dynamic_size", False), options.pop("source", "onnx")
    opts = HookOptions(**{"explain": "top2", **options})
    suffix = ".onnx" if backend == "onnxruntime" else ".xml"
    info = ModelInfo(mean=(MEAN,), scale=(SCALE,))
    model = built.onnx
    if source == "ir":
        model = tmp_path / "plain.xml"
        OPENVINO.save(OPENVINO.convert(built.onnx), model, fp16=False)
    result = export(model, tmp_path / f"patched{suffix}", layer=target, options=opts, fp16=False, info=info,
                    dynamic_size=dynamic)  # fmt: skip
    assert result.path == "backward" and result.target.layer == target
    got = run(result.files[0], built.images, backend)
    plain = built.plain.setdefault(backend, run(built.onnx, built.images, backend)["logits"])
    if backend == "onnxruntime":
        np.testing.assert_array_equal(got["logits"], plain)
    else:
        np.testing.assert_allclose(got["logits"], plain, rtol=1e-5, atol=1e-5 * float(np.abs(plain).max()))

    if opts.selection.top is not None:
        classes = got["saliency_classes"]
        np.testing.assert_array_equal(classes, np.argsort(-plain, axis=1, kind="stable")[:, : opts.selection.top])
    elif opts.selection.ids is not None:
        classes = np.array([list(opts.selection.ids)] * BATCH)
    else:
        classes = np.tile(np.arange(plain.shape[1]), (BATCH, 1))
    references = []
    for dtype in (torch.float32, torch.float64):
        net = copy.deepcopy(built.net).to(dtype)
        references.append(normalised(gradient_reference(
            opts.method, net, target, built.images.astype(np.float64), classes, str(opts.score),
            opts.step_count if opts.method == "integrated-gradcam" else 0, -MEAN / SCALE,
        )))  # fmt: skip
    want, want64 = references
    assert np.mean(want64.max(axis=(2, 3)) == 1.0) >= 0.5, "mostly flat reference maps: the case tests little"
    tolerance = max(8 * float(np.abs(want - want64).max()), 16 * float(np.finfo(np.float32).eps))
    assert got["saliency_map"].shape == want64.shape
    diff = float(np.abs(got["saliency_map"] - want64).max())
    assert diff <= tolerance, f"max |map - reference| = {diff:.3g} > {tolerance:.3g}"
