"""The exact shortcut past the mosaic (issue 12): per-position ops, then a global pool or a flatten + linear
layer, evaluated in closed form. Every shortcut must equal the mosaic path and the torch oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import export_onnx, images

torch = pytest.importorskip("torch")
from oracle import reference_saliency
from runners import run
from torch import nn

from ovxai import HookOptions, export
from ovxai.cost import hook_macs
from ovxai.formats.onnx import ONNX
from ovxai.graph import plan_tail
from ovxai.target import pick_prediction, resolve

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
        options=HookOptions(mask=mask, score="logits", fast_path=False),
    )
    assert mosaic.path == "mosaic"
    ir = export(path, tmp_path / "cut.xml", layer="features", options=options, fp16=False)
    expected = None
    for batch in (1, 3):
        x = images(batch, 16, seed=batch)
        expected = reference_saliency(net, "features", x, score="logits", mask=mask)
        got = run(cut.files[0], x, "onnxruntime")
        # The same maps as the mosaic up to float32 rounding, which min-max normalisation magnifies: the
        # mosaic itself is 6e-5 from the float64-scored oracle on the hybrid head.
        np.testing.assert_allclose(
            got["saliency_map"], run(mosaic.files[0], x, "onnxruntime")["saliency_map"], atol=1e-4
        )
        np.testing.assert_allclose(got["saliency_map"], expected, atol=2e-4)  # float32 engines, float64 scores
        np.testing.assert_array_equal(got["logits"], run(path, x, "onnxruntime")["logits"])
        np.testing.assert_allclose(run(ir.files[0], x, "openvino")["saliency_map"], expected, atol=2e-4)
    assert expected is not None and expected.std() > 0.1  # the maps are not flat: the comparison means something


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
    assert plan.shortcut is not None and plan.shortcut.kind == "linear"
    n = 16
    cut, mosaic = hook_macs(graph, plan, n), hook_macs(graph, plan, n, shortcut=False)
    first, second = 256 * 32, 32 * 10
    assert mosaic == n * (first + second)
    assert cut == first + n * second  # one pass of the first layer's weight, the rest on N rows
