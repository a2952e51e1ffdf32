"""Incremental inference through a spatial tail (ovxai/incremental.py, ``ExportResult.path == "windows"``).

Copy n of the target map differs from the tail's response to an all-zero map only inside a window around n
that grows with every convolution; the hook computes each copy there only. Every such export must give the
mosaic's maps (``HookOptions(path="mosaic")``) and the torch oracle's, keep the prediction bit for bit, and be
chosen only where it is exact and cheaper: a global pool right after the target keeps the closed form ("mean"),
a max pool or a skip from before the target in the tail keeps the mosaic, and so does a tail whose windows
would cover most of the map (ResNet-18 at ``layer3`` on 96 px: layer4 is 3 x 3).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import export_onnx, images

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchvision") is None:  # found, not imported: it imports through models/zoo.py
    pytest.skip("ResNet needs torchvision (the dev extra)", allow_module_level=True)
from oracle import Reference, close, reference
from runners import run
from torch import nn

from models import zoo
from ovxai import HookOptions, export
from ovxai.exporter.pipeline import ExportResult
from ovxai.formats.onnx import ONNX
from ovxai.hook.cost import hook_macs
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import pick_prediction, resolve

pytestmark = pytest.mark.slow

MASKS = ("onehot", "gaussian")


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class StridedDilatedDepthwise(nn.Module):
    """Target ``features``: 96 x 13 x 13. Tail: 3 x 3 stride-2 pad-1 conv on the odd map (13 x 13 -> 7 x 7, the last
    output row reading the padding; a one-hot copy's window 2 x 2, a Gaussian one's 3 x 3) + BN + SiLU, a
    dilation-2 conv (pad 2; windows 6 x 6 one-hot, read from the strided windows, the background and the
    padding; the whole map Gaussian), BN, a depthwise conv (groups = C; the whole map), a per-channel scale (a
    constant Mul, ConvNeXt's layer scale), then the residual Add of the strided branch (a 2 x 2 or 3 x 3 window)
    and the depthwise one (the whole map), Hardswish, global mean, Linear. The strided conv carries most of the
    MACs, so the windows pay. (Eval-mode BN after a conv is folded into it by the exporter.)"""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), _bn(32), nn.ReLU(),  # 52 -> 26
            nn.Conv2d(32, 96, 3, stride=2, padding=1), _bn(96), nn.ReLU(),  # -> 13
        )  # fmt: skip
        self.down = nn.Sequential(nn.Conv2d(96, 24, 3, stride=2, padding=1), _bn(24), nn.SiLU())
        self.dilated = nn.Sequential(nn.Conv2d(24, 24, 3, padding=2, dilation=2), _bn(24))
        self.depthwise = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=24), _bn(24))
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 24).reshape(1, 24, 1, 1))
        self.act = nn.Hardswish()
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(self.features(x))
        return self.fc(self.act(y + self.depthwise(self.dilated(y)) * self.scale).mean((2, 3)))


class NonSquare(nn.Module):
    """Target ``features``: 64 x 6 x 9 (H != W, one even, one odd). Tail: 3 x 3 conv with stride (1, 2) (6 x 9 ->
    6 x 5; one-hot windows 3 x 2), BN, ReLU, a (3, 5) conv padded (1, 2) (windows 5 x 5: every column, not every
    row), BN, the residual Add of both (windows of different size), a BatchNormalization of its own (no conv to
    fold into), ReLU, AdaptiveAvgPool2d(1), Linear. Gaussian: windows 5 x 3, then the whole map.
    A row/column mix-up in the geometry moves or clips the windows wrongly."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), _bn(32), nn.ReLU(),  # 36 -> 18
            nn.Conv2d(32, 64, 3, stride=(3, 2), padding=1), _bn(64), nn.ReLU(),  # -> 6 x 9
        )  # fmt: skip
        self.conv1 = nn.Sequential(nn.Conv2d(64, 16, 3, stride=(1, 2), padding=1), _bn(16), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 16, (3, 5), padding=(1, 2)), _bn(16))
        self.norm = _bn(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(self.features(x))
        return self.fc(torch.flatten(self.pool(torch.relu(self.norm(a + self.conv2(a)))), 1))


def _stem(width: int) -> nn.Sequential:
    """3 x 32 x 32 -> width x 8 x 8."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), _bn(16), nn.ReLU(),
        nn.Conv2d(16, width, 3, stride=2, padding=1), _bn(width), nn.ReLU(),
    )  # fmt: skip


class PoolHead(nn.Module):
    """BN + ReLU then a global pool right after the target: the closed form ("mean") is cheaper than windows."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _stem(16)
        self.head = nn.Sequential(_bn(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MaxPoolTail(nn.Module):
    """A 3 x 3 conv, then MaxPool2d(3, stride 1, padding 1) before the global pool: not a convolution nor a
    per-position op (it is not linear in its window), so the mosaic. Without the max pool, windows would pay."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _stem(16)
        self.tail = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1), _bn(16), nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.features(x))


class SkipFromBefore(nn.Module):
    """The tail adds an activation computed before the target (``features``' input): the copies' skip is not
    the masked map's background, so the mosaic. Without the skip, windows would pay."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _stem(16)
        self.features = nn.Sequential(nn.Conv2d(16, 16, 1), _bn(16), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), _bn(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = self.stem(x)
        return self.fc(torch.relu(before + self.conv(self.features(before))).mean((2, 3)))


class ConstantFirst(nn.Module):
    """Per-channel constants as the FIRST operand of the per-position ops (``gamma * x``, ``beta + x``, as torch
    writes a layer scale or a bias), between two 3 x 3 convs on an 8 x 8 target (windows 3 x 3, then 5 x 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _stem(16)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 16).reshape(1, 16, 1, 1))
        self.beta = nn.Parameter(torch.linspace(-0.5, 0.5, 16).reshape(1, 16, 1, 1))
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.beta + self.gamma * self.conv1(self.features(x)))
        return self.fc(self.conv2(y).mean((2, 3)))


class OneConv(nn.Module):
    """The cost case: target ``features`` 8 x 6 x 8, one Conv2d(8, 12, 3, padding=1), global pool, Linear(12, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=(4, 3), padding=1), _bn(8), nn.ReLU())  # 24 -> 6 x 8
        self.conv = nn.Conv2d(8, 12, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(self.features(x))), 1))


def _resnet10() -> nn.Module:
    """torchvision's ResNet with one BasicBlock per stage: ``layer4`` is ResNet-18's ``layer4.0``, a 3 x 3
    stride-2 conv, a 3 x 3 conv, the 1 x 1 stride-2 downsample (even positions only: odd copies leave it at
    its background) and the residual Add. At 192 px, layer3 is 12 x 12 and layer4 6 x 6: windows of 1, 2 x 2
    (the downsample: 1 x 1, or empty) and 4 x 4 one-hot; 3 x 3, 3 x 3 (downsample 2 x 2) and 5 x 5 Gaussian.
    (ResNet-18 itself, with layer4.1's two convs on the whole map, takes the windows only from 192 px one-hot /
    224 px Gaussian, where its oracle costs too much for this file: test_windows_that_would_not_pay_keep_the_mosaic.)"""
    resnet = zoo.torchvision().models.resnet  # imported without its compiled operators' fake kernels
    torch.manual_seed(0)
    return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)


@dataclass(frozen=True)
class Case:
    factory: Callable[[], nn.Module]
    size: int  # input height and width
    layer: str
    path: str  # the fast path the export must take
    calibration: int = 0  # image size for the BatchNorm statistics where not ``size`` (the same nets, cheaper)


CASES = {
    "resnet": Case(_resnet10, 192, "layer3", "windows", calibration=64),
    "strided": Case(StridedDilatedDepthwise, 52, "features", "windows"),
    "nonsquare": Case(NonSquare, 36, "features", "windows"),
    "constant-first": Case(ConstantFirst, 32, "features", "windows"),
    "pool-head": Case(PoolHead, 32, "features", "mean"),
    "maxpool": Case(MaxPoolTail, 32, "features", "mosaic"),
    "skip-from-before": Case(SkipFromBefore, 32, "features", "mosaic"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path]]:
    """Each case's torch net (BN affines random, statistics calibrated, a spread classifier) and its ONNX."""
    folder = tmp_path_factory.mktemp("incremental")
    built = {}
    for name, case in CASES.items():
        torch.manual_seed(0)
        net = zoo.randomize(case.factory(), case.calibration or case.size)
        built[name] = (net, export_onnx(net, case.size, folder / f"{name}.onnx", "legacy"))
    return built


def _as_ir(path: Path) -> Path:
    """The ONNX model converted to an FP32 IR: a source the hook reads through the OpenVINO adapter (its own
    convolution attributes, and the copies' padding removed on OpenVINO nodes)."""
    import openvino as ov

    ir = path.with_suffix(".xml")
    if not ir.exists():
        ov.save_model(ov.convert_model(str(path)), str(ir), compress_to_fp16=False)
    return ir


@contextlib.contextmanager
def _one_prefix(net: nn.Module) -> Iterator[None]:
    """The oracle feeds N identical copies of an image through the whole network; the part before the target
    gives N identical rows, so compute it once: the copies become N rows where the target hook multiplies by the
    (N, 1, H, W) masks (broadcasting, as an Add of a pre-target skip does). The same arithmetic, N times fewer
    MACs before the target."""

    def first_row(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        x = args[0]
        if x.shape[0] > 1 and bool((x == x[:1]).all()):
            return (x[:1], *args[1:])
        return None

    handle = net.register_forward_pre_hook(first_row)
    try:
        yield
    finally:
        handle.remove()


def _oracle(net: nn.Module, layer: str, x: np.ndarray, mask: str) -> Reference:
    with _one_prefix(net):  # (the float64 copy of the net keeps the hook)
        return reference(net, layer, x, score="logits", mask=mask)


def _export(path: Path, out: Path, layer: str, mask: str, fast: bool = True) -> ExportResult:
    options = HookOptions(mask=mask, score="logits", path="auto" if fast else "mosaic")
    return export(path, out, layer=layer, options=options, fp16=False)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("name", [n for n in CASES if n != "pool-head"])
def test_windows_equal_the_mosaic_and_the_oracle(models, tmp_path: Path, name: str, mask: str) -> None:
    net, path = models[name]
    case = CASES[name]
    cut = _export(path, tmp_path / "cut.onnx", case.layer, mask)
    assert cut.path == case.path
    assert cut.fast_path == (case.path != "mosaic")
    mosaic = _export(path, tmp_path / "mosaic.onnx", case.layer, mask, fast=False)
    assert mosaic.path == "mosaic"
    ir = _export(path, tmp_path / "cut.xml", case.layer, mask)
    assert ir.path == case.path
    plain_ir = _as_ir(path)
    ir_in = _export(plain_ir, tmp_path / "cut_from_ir.xml", case.layer, mask)  # IR in, IR out
    assert ir_in.path == case.path
    three = images(3, case.size, seed=3)
    expected = _oracle(net, case.layer, three, mask)  # one oracle pass: the batch-1 image is the first of three
    assert expected.maps.std() > 0.1  # the maps are not flat: the comparison means something
    for x, want in ((three[:1], Reference(expected.maps[:1], expected.noise)), (three, expected)):
        got = run(cut.files[0], x, "onnxruntime")
        close(got["saliency_map"], run(mosaic.files[0], x, "onnxruntime")["saliency_map"], want.between_engines)
        want.check(got["saliency_map"])
        np.testing.assert_array_equal(got["logits"], run(path, x, "onnxruntime")["logits"])
        from_ir = run(ir.files[0], x, "openvino")
        want.check(from_ir["saliency_map"])
        np.testing.assert_array_equal(from_ir["logits"], run(path, x, "openvino")["logits"])
        ir_to_ir = run(ir_in.files[0], x, "openvino")
        want.check(ir_to_ir["saliency_map"])
        np.testing.assert_array_equal(ir_to_ir["logits"], run(plain_ir, x, "openvino")["logits"])


def test_a_global_pool_after_the_target_keeps_the_closed_form(models, tmp_path: Path) -> None:
    _, path = models["pool-head"]
    for mask in MASKS:
        assert _export(path, tmp_path / f"{mask}.onnx", "features", mask).path == "mean"


def test_windows_that_would_not_pay_keep_the_mosaic(tmp_path: Path) -> None:
    """ResNet-18 at ``layer3`` on 96 px (6 x 6 -> layer4 3 x 3): after layer4.0.conv1's 2 x 2 windows every
    conv covers the whole 3 x 3 map (about 0.92 of the mosaic's MACs one-hot): the mosaic, costed as such."""
    torch.manual_seed(0)
    net = zoo.torchvision().models.resnet18(weights=None, num_classes=10).eval()  # only the graph matters here
    path = export_onnx(net, 96, tmp_path / "resnet18.onnx", "legacy")
    graph = ONNX.view(ONNX.load(path))
    prediction = pick_prediction(graph, None)
    plan = plan_tail(graph, resolve(graph, prediction, "layer3").tensor, prediction)
    for mask in MASKS:
        assert hook_macs(graph, plan, HookOptions(mask=mask)) == hook_macs(
            graph, plan, HookOptions(mask=mask, path="mosaic")
        )
    assert _export(path, tmp_path / "cut.onnx", "layer3", "onehot").path == "mosaic"


def test_inspect_reports_the_cost_of_the_windows(tmp_path: Path) -> None:
    """One Conv2d(Cin=8, Cout=12, 3, padding=1) on a 6 x 8 target, global pool, Linear(12, 10); N = 48.

    A one-hot copy differs from the background on the conv's output only in the 3 x 3 around n (cut at the
    borders, but every copy's window has the largest size, 3 x 3, placed inside the map): 9 outputs, each
    Cout x Cin x 9 MACs, per copy; the Linear runs on every copy: N x (9 x 12 x 8 x 9 + 12 x 10) = 379,008.
    The mosaic: N x (48 x 12 x 8 x 9 + 120) = 1,996,416. The Gaussian mask's 3 x 3 footprint grows to 5 x 5
    windows: N x (25 x 864 + 120) = 1,042,560. The global pool and the flatten cost no MACs in this count."""
    torch.manual_seed(0)
    net = zoo.randomize(OneConv(), 24)
    path = export_onnx(net, 24, tmp_path / "oneconv.onnx", "legacy")
    graph = ONNX.view(ONNX.load(path))
    prediction = pick_prediction(graph, None)
    target = resolve(graph, prediction, "features")
    assert target.shape[1:] == (8, 6, 8)
    plan = plan_tail(graph, target.tensor, prediction)
    n, conv, linear = 48, 12 * 8 * 9, 12 * 10
    mosaic = hook_macs(graph, plan, HookOptions(path="mosaic"))
    assert mosaic == n * (48 * conv + linear)
    cut = hook_macs(graph, plan)
    assert cut < mosaic
    assert cut == n * (9 * conv + linear), (cut, n * (9 * conv + linear))
    assert hook_macs(graph, plan, HookOptions(mask="gaussian")) == n * (25 * conv + linear)
    assert hook_macs(graph, plan, HookOptions(mask="gaussian", path="mosaic")) == mosaic
    for mask in MASKS:
        assert _export(path, tmp_path / f"{mask}.onnx", "features", mask).path == "windows"
