"""The exact shortcut past the mosaic (issue 12): per-position ops, then a global pool or a flatten + linear
layer, evaluated in closed form. Every shortcut must equal the mosaic path and the torch oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import export_onnx, images

torch = pytest.importorskip("torch")
from oracle import close, reference
from runners import run
from torch import nn

from ovxai import HookOptions, export
from ovxai.formats.onnx import ONNX
from ovxai.hook.cost import hook_macs
from ovxai.hook.paths.linear import LINEAR, LinearPlan
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import pick_prediction, resolve

pytestmark = pytest.mark.slow


def _features(width: int = 16) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip


class SqueezeNetHead(nn.Module):
    """SqueezeNet's classifier: Dropout, 1 x 1 convolution to the classes, ReLU, global pool."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(16, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class ConvHeadHybrid(nn.Module):
    """EfficientViT / MobileNetV3-style head: 1 x 1 conv + BN + Hardswish, global pool, then an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.head = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.Hardswish())
        self.mlp = nn.Sequential(nn.Linear(24, 32), nn.GELU(), nn.Linear(32, 10))
        with torch.no_grad():  # one position moves the pooled features by 1/N: a scaled MLP makes that visible
            self.mlp[0].weight.mul_(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.head(self.features(x)).mean((2, 3)))


class VGGHead(nn.Module):
    """VGG / AlexNet: a shape-keeping adaptive pool, flatten, Linear -> ReLU -> Dropout -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(nn.Linear(16 * 16, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNetHead(nn.Module):
    """AlexNet: max pool, a shape-keeping adaptive pool, flatten, Dropout -> Linear -> ReLU -> ... -> Linear,
    with a first weight large enough (512 x 256) that a second copy of it would show in the file's size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_features(32), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(32 * 16, 256), nn.ReLU(), nn.Dropout(), nn.Linear(256, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class ReluThenLinear(VGGHead):
    """A per-position op between the map and the flatten: the linear layer sees ReLU(BN(T))."""

    def __init__(self) -> None:
        super().__init__()
        self.post = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.post(self.features(x)), 1))


def _randomized(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


CASES = {
    # name: (network, expected shortcut)
    "squeezenet": (SqueezeNetHead, "mean"),
    "hybrid": (ConvHeadHybrid, "mean"),
    "vgg": (VGGHead, "linear"),
    "alexnet": (AlexNetHead, "linear"),
    "relu-linear": (ReluThenLinear, "linear"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path]]:
    folder = tmp_path_factory.mktemp("shortcut")
    built = {}
    for name, (factory, _) in CASES.items():
        torch.manual_seed(0)
        net = _randomized(factory())
        built[name] = (net, export_onnx(net, 16, folder / f"{name}.onnx", "legacy"))
    return built


@pytest.mark.parametrize("mask", ["onehot", "gaussian"])
@pytest.mark.parametrize("name", list(CASES))
def test_shortcut_equals_the_mosaic_and_the_oracle(models, tmp_path: Path, name: str, mask: str) -> None:
    net, path = models[name]
    options = HookOptions(mask=mask, score="logits")
    cut = export(path, tmp_path / "cut.onnx", layer="features", options=options)
    assert cut.path == CASES[name][1]
    mosaic = export(
        path,
        tmp_path / "mosaic.onnx",
        layer="features",
        options=HookOptions(mask=mask, score="logits", path="mosaic"),
    )
    assert mosaic.path == "mosaic"
    ir = export(path, tmp_path / "cut.xml", layer="features", options=options, fp16=False)
    expected = None
    for batch in (1, 3):
        x = images(batch, 16, seed=batch)
        expected = reference(net, "features", x, score="logits", mask=mask)
        got = run(cut.files[0], x, "onnxruntime")
        # The same maps as the mosaic up to float32 rounding, which min-max normalisation magnifies.
        close(got["saliency_map"], run(mosaic.files[0], x, "onnxruntime")["saliency_map"], expected.between_engines)
        expected.check(got["saliency_map"])
        _same_prediction(got["logits"], run(path, x, "onnxruntime")["logits"], cut.path)
        from_ir = run(ir.files[0], x, "openvino")
        expected.check(from_ir["saliency_map"])
        _same_prediction(from_ir["logits"], run(path, x, "openvino")["logits"], cut.path)
    assert expected is not None and expected.maps.std() > 0.1  # the maps are not flat: the comparison means something


def _same_prediction(got: np.ndarray, plain: np.ndarray, path: str) -> None:
    """Bit for bit, except past a linear shortcut: there the original product is summed position by position."""
    if path == "linear":  # the export's own allowance: 2^-19 (16 units in float32's last place) of the largest
        close(got, plain, 2.0**-19 * float(np.abs(plain).max()), "prediction")
    else:
        np.testing.assert_array_equal(got, plain)


def _weight_bytes(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    import onnx

    return {i.name: (tuple(i.dims), len(i.raw_data)) for i in onnx.load(str(path)).graph.initializer}


def test_the_file_holds_one_copy_of_the_linear_weight(models, tmp_path: Path) -> None:
    """The first linear layer's weight is stored once, re-laid (N, C', K), in ONNX and in IR (FP32 and FP16)."""
    import openvino as ov

    _, path = models["alexnet"]
    plain = _weight_bytes(path)
    weight = next(name for name, (dims, _) in plain.items() if dims == (256, 512))  # the Gemm's (K, C' N)
    cut = export(path, tmp_path / "cut.onnx", layer="features")
    patched = _weight_bytes(cut.files[0])
    assert weight not in patched and [d for d, _ in patched.values()].count((16, 32, 256)) == 1
    size = plain[weight][1]
    extra = sum(b for _, b in patched.values()) - sum(b for _, b in plain.values())
    assert abs(extra) < size // 10, (extra, size)  # a second copy would add `size`
    for fp16 in (False, True):
        plain_ir = tmp_path / f"plain{int(fp16)}.xml"
        ov.save_model(ov.convert_model(str(path)), str(plain_ir), compress_to_fp16=fp16)
        for source in (path, plain_ir):  # ONNX converted to IR, and IR in (FP16 weights re-laid as FP16)
            out = export(source, tmp_path / f"cut{int(fp16)}_{source.suffix[1:]}.xml", layer="features", fp16=fp16)
            assert out.path == "linear"
            grown = out.files[1].stat().st_size - plain_ir.with_suffix(".bin").stat().st_size
            assert grown < size // (20 if fp16 else 10), (fp16, source, grown, size)


def test_no_mosaic_in_the_shortcut_graph(models, tmp_path: Path) -> None:
    """The shortcut's largest tensor is O(B * N * max(C, K)), never the (B * N, C, H, W) mosaic."""
    import onnx

    _, path = models["vgg"]
    result = export(path, tmp_path / "cut.onnx", layer="features")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(result.files[0])))
    for info in model.graph.value_info:
        if info.name.startswith("ovxai/"):
            dims = [d.dim_value or 1 for d in info.type.tensor_type.shape.dim]
            assert int(np.prod(dims)) <= 16 * 16 * 32, (info.name, dims)  # N x C' x K, the per-position weight


def test_inspect_reports_the_cost_of_the_chosen_path(models) -> None:
    _, path = models["vgg"]
    graph = ONNX.view(ONNX.load(path))
    prediction = pick_prediction(graph, None)
    target = resolve(graph, prediction, "features")
    plan = plan_tail(graph, target.tensor, prediction)
    linear = LINEAR.plan(graph, plan, HookOptions())
    assert isinstance(linear, LinearPlan)
    n = 16
    cut, mosaic = hook_macs(graph, plan), hook_macs(graph, plan, HookOptions(path="mosaic"))
    first, second = 256 * 32, 32 * 10
    assert mosaic == n * (first + second)
    assert cut == n * second  # the per-position products replace the first layer's own: the rest on N rows
    # The Gaussian mask through the shape-keeping pool (it commutes with the mask's scales): no extra pass.
    assert linear.homogeneous and hook_macs(graph, plan, HookOptions(mask="gaussian")) == n * second


@pytest.mark.parametrize("opset", [11, 17])  # an opset-11 model is upgraded to 13 on load (Softmax's axis)
def test_pooled_logits_are_scored_class_major(models, tmp_path: Path, opset: int) -> None:
    """SqueezeNet's pooled features are its logits: the copies' scores are computed as (B, K, N) maps in the
    original path's layout, so the hook moves no score between rows and maps (no Transpose). Every score,
    explain choice and mask equals the mosaic."""
    import copy
    import warnings

    import onnx

    net = copy.deepcopy(models["squeezenet"][0])
    with torch.no_grad():  # peaked classes: softmax maps that are more than float32 rounding after min-max
        net.classifier[1].weight.mul_(20.0)
    path = tmp_path / f"opset{opset}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "b"}})  # fmt: skip
    x = images(3, 16, seed=5)
    for score, explain, mask in (
        ("softmax", "all", "onehot"),
        ("softmax", "top3", "gaussian"),
        ("sigmoid", "7,2", "onehot"),
        ("logits", "top2", "gaussian"),
    ):
        options = HookOptions(score=score, explain=explain, mask=mask)
        cut = export(path, tmp_path / "cut.onnx", layer="features", options=options)
        assert cut.path == "mean"
        if mask == "onehot":  # (the Gaussian mask's placement matrices are transposed: N x N, no scores)
            hook_ops = {n.op_type for n in onnx.load(str(cut.files[0])).graph.node if n.name.startswith("ovxai/")}
            assert "Transpose" not in hook_ops, hook_ops
        mosaic = export(path, tmp_path / "mosaic.onnx", layer="features",
                        options=HookOptions(score=score, explain=explain, mask=mask, path="mosaic"))  # fmt: skip
        want = run(mosaic.files[0], x, "onnxruntime")
        ir = export(path, tmp_path / "cut.xml", layer="features", options=options, fp16=False)
        exact = reference(net, "features", x, score=score, mask=mask)
        for got in (run(cut.files[0], x, "onnxruntime"), run(ir.files[0], x, "openvino")):
            close(got["saliency_map"], want["saliency_map"], exact.between_engines)
            if explain != "all":
                np.testing.assert_array_equal(got["saliency_classes"], want["saliency_classes"])
    assert want["saliency_map"].std() > 0.1
