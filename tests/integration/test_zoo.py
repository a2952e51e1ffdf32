"""The architecture zoo: torchvision's and timm's classifiers (random weights, models/zoo.py) through
``to_onnx`` and ``ovxai.export``, on ONNX Runtime and OpenVINO, against the torch oracle.

Each model is exported with the automatic target (which must resolve to the model's last
stage) and with one explicit module path, usually inside the network, so that the copied tail holds
the family's own blocks (squeeze-excite, dense concatenations, channel shuffles, multi-resolution
fusions, attention, permutes to channels-last, weight standardisation, re-parameterisable branches).
Scores are logits: with random weights the softmax is near uniform and its min-max maps are rounding
noise. The prediction output must be the unpatched model's bit for bit, in ONNX Runtime and in OpenVINO at f32
(against the unpatched model converted the same way). Each case states the exporter that works for it (both do
for all but VGG at 64 px, which the legacy one refuses). Maps are held to the case's own float32 error (the oracle
in float32 against float64, tests/oracle.py), which the min-max normalisation magnifies where positions score
alike (deep nets on 2x2 maps: Inception-v3, DLA).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
for _package in ("torchvision", "timm"):  # found, not imported: torchvision imports only through models/zoo.py
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"the architecture zoo needs {_package} (the dev extra)", allow_module_level=True)

from oracle import Reference, reference
from runners import run

from models import zoo
from ovxai import HookOptions, export
from ovxai.errors import OvxaiError
from ovxai.exporter.from_torch import to_onnx
from ovxai.exporter.pipeline import ExportResult, load_model
from ovxai.hook.target import resolve

BATCH = 2
BACKENDS = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class Case:
    """One model: how to build it, where its automatic target must land, one explicit target."""

    model: str  # torchvision.models / timm name
    family: str
    library: str  # 'torchvision' or 'timm'
    size: int  # input height and width
    auto: str  # ExportResult.target.layer expected for the automatic target
    layer: str  # the explicit --layer (a module path)
    exporter: str = "legacy"  # torch's ONNX exporter that works for the model
    more: tuple[str, ...] = ()  # further explicit module paths, tested like ``layer``
    auto_also: tuple[str, ...] = ()  # other names accepted for the automatic target
    auto_module: str | None = None  # the module the oracle hooks for the automatic target (default: auto)
    kwargs: dict[str, Any] = field(default_factory=dict)
    slow: bool = False
    xfail: dict[str, str] = field(default_factory=dict)  # 'auto-name', 'auto' or a module path -> reason
    openvino_refused: str = ""  # why the export refuses it for OpenVINO (the prediction would move), if it does

    @property
    def id(self) -> str:
        return self.model

    @property
    def targets(self) -> tuple[str, ...]:
        return ("auto", self.layer, *self.more)


TV, TIMM = "torchvision", "timm"
# fmt: off
CASES = [
    # torchvision
    # layer4.0's downsample path in the tail
    Case("resnet18", "ResNet", TV, 64, "layer4", "layer3"),
    # a layer inside a dense block: the later layers' concatenations read earlier maps (tail side inputs).
    # The automatic target is the functional ReLU after features.norm5: masking commutes with a ReLU, so the
    # oracle hooks 'features'.
    Case(
        "densenet121", "DenseNet", TV, 64, "features", "features.denseblock4.denselayer8",
        auto_also=("/Relu",), auto_module="features",
    ),
    # (VGG's linear head: the repo's VGG in test_oracle, test_shortcut and test_routes; torchvision's 400 MB VGG
    # weights made its three exports the matrix's slowest minute and a half)
    Case("mobilenet_v2", "MobileNetV2", TV, 64, "features", "features.13"),
    Case("mobilenet_v3_small", "MobileNetV3", TV, 64, "features", "features.8"),  # SE blocks in the tail
    Case("efficientnet_b0", "EfficientNet", TV, 64, "features", "features.5"),
    Case("efficientnet_v2_s", "EfficientNetV2", TV, 64, "features", "features.5", slow=True),
    Case("regnet_y_400mf", "RegNet", TV, 64, "trunk_output", "trunk_output.block3"),
    # the tail holds a LayerNorm2d (permute to channels-last and back) and CNBlocks working channels-last
    Case("convnext_tiny", "ConvNeXt", TV, 64, "features", "features.5", slow=True),
    Case(
        "googlenet", "GoogLeNet", TV, 64, "inception5b", "inception4e",
        kwargs={"aux_logits": False, "init_weights": True},
    ),
    # 107 px: the smallest input whose Mixed_7c map is 2x2
    Case(
        "inception_v3", "Inception-v3", TV, 107, "Mixed_7c", "Mixed_6e",
        kwargs={"aux_logits": False, "init_weights": True}, slow=True,
    ),
    # channel split and shuffle. Its shuffles reshape by the batch read from the maps' shapes: with the hook's own
    # shape reads beside them, the CPU plugin's default bf16 compilation of the original path changes (a Concat in
    # f32), so the export refuses the IR in one line (f32 and ONNX Runtime are exact)
    Case(
        "shufflenet_v2_x0_5", "ShuffleNetV2", TV, 64, "conv5", "stage3",
        openvino_refused="the CPU plugin compiles the original path otherwise in bf16 with the hook beside it",
    ),
    # the last map before the pool is the class map of the final 1x1 convolution: pointwise, so masking it
    # or the 'features' map before it gives the same min-max map
    Case("squeezenet1_1", "SqueezeNet", TV, 64, "classifier.2", "features", exporter="dynamo"),
    Case("mnasnet0_5", "MNASNet", TV, 64, "layers", "layers.11"),
    # timm
    # the 1/16 branch of the head: the other branches' maps join it in the tail (side inputs)
    Case("hrnet_w18_small", "HRNet", TIMM, 64, "final_layer", "incre_modules.2"),
    Case("dla34", "DLA", TIMM, 64, "level5", "level4"),  # tree aggregation nodes in the tail
    # a dual-path block's output: the tail slices it into its residual and densely grown channel groups
    Case("dpn48b", "DPN", TIMM, 64, "features", "features.conv5_1"),
    # a block inside a stage's own Sequential: torch.onnx names it '/stages/stages.3/blocks/blocks.0/...'
    Case("cs3darknet_s", "CSPDarkNet", TIMM, 64, "stages", "stages.2", more=("stages.3.blocks.0",),),
    # weight standardisation computed in the graph (ScaledStdConv2d), no BatchNorm
    Case("nf_regnet_b0", "NFNet", TIMM, 64, "final_act", "stages.2"),
    # training-time branches (3x3, 1x1, identity BN), not re-parameterised
    Case("repvgg_a0", "RepVGG", TIMM, 64, "stages", "stages.2"),
    Case("mobileone_s0", "MobileOne", TIMM, 64, "stages", "stages.2", slow=True),
    # the tail holds the attention stage (stages.3) and the SE of the final MobileOne conv
    Case("fastvit_sa12", "FastViT", TIMM, 64, "final_conv", "stages.2", slow=True),
]
# fmt: on


def _marks(case: Case, key: str) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.slow] if case.slow else []
    if key in case.xfail:
        marks.append(pytest.mark.xfail(strict=True, reason=case.xfail[key]))
    return marks


@dataclass
class Built:
    net: Any
    onnx: Path
    images: np.ndarray
    plain: dict[str, np.ndarray] = field(default_factory=dict)  # backend -> the unpatched model's logits


@pytest.fixture(scope="session")
def zoo_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(case) -> Built: the torch model and its plain ONNX export, once per session."""
    folder = tmp_path_factory.mktemp("zoo")
    cache: dict[str, Built] = {}

    def get(case: Case) -> Built:
        if case.id not in cache:
            build = zoo.build_torchvision if case.library == TV else zoo.build_timm
            net = build(case.model, case.size, **case.kwargs)
            example = torch.rand(BATCH, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
            path = to_onnx(net, folder / f"{case.id}.onnx", example, case.exporter)
            images = np.random.default_rng(2).random((BATCH, 3, case.size, case.size), dtype=np.float32)
            cache[case.id] = Built(net, path, images)
        return cache[case.id]

    return get


@pytest.fixture(scope="session")
def zoo_patched(zoo_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(case, target, backend) -> ExportResult of the patched model (.onnx for ONNX Runtime, .xml for OpenVINO)."""
    folder = tmp_path_factory.mktemp("zoo-patched")
    cache: dict[tuple[str, str, str], ExportResult] = {}

    def get(case: Case, target: str, backend: str) -> ExportResult:
        key = (case.id, target, backend)
        if key not in cache:
            suffix = ".onnx" if backend == "onnxruntime" else ".xml"
            layer = None if target == "auto" else target
            out = folder / f"{case.id}-{target}{suffix}"
            options = HookOptions(score="logits")
            cache[key] = export(zoo_models(case).onnx, out, layer=layer, options=options, fp16=False)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def zoo_oracle(zoo_models: Any) -> Any:
    """(case, module) -> the torch oracle's (B, K, H, W) maps on the case's images, logits scores."""
    cache: dict[tuple[str, str], Reference] = {}

    def get(case: Case, module: str) -> Reference:
        if (case.id, module) not in cache:
            built = zoo_models(case)
            cache[(case.id, module)] = reference(built.net, module, built.images, score="logits")
        return cache[(case.id, module)]

    return get


def _backend(case: Case, target: str) -> str:
    """Each target through one engine, the engines alternating by case and target: every case meets both, and the
    matrix exports each model once per target (the export itself runs the result beside the original)."""
    return BACKENDS[(CASES.index(case) + case.targets.index(target)) % len(BACKENDS)]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c, "auto-name")) for c in CASES])
def test_automatic_target_is_the_last_stage(zoo_models: Any, zoo_patched: Any, case: Case) -> None:
    """The automatic target lands on the last stage, and the name it reports gives it back as ``layer=``."""
    result = zoo_patched(case, "auto", "onnxruntime" if case.openvino_refused else _backend(case, "auto"))
    layer, tensor = result.target.layer, result.target.tensor
    assert layer in (case.auto, *case.auto_also), f"resolved to {layer} ({tensor})"
    graph = load_model(zoo_models(case).onnx).graph
    assert resolve(graph, result.prediction, layer).tensor == tensor


def _refused(case: Case, backend: str) -> list[pytest.MarkDecorator]:
    if backend != "openvino" or not case.openvino_refused:
        return []
    return [pytest.mark.xfail(strict=True, raises=OvxaiError, reason=case.openvino_refused)]


PARAMS = [
    pytest.param(
        case, target, backend, id=f"{case.id}-{target}-{backend}", marks=_marks(case, target) + _refused(case, backend)
    )
    for case in CASES
    for target in case.targets
    for backend in [_backend(case, target)]
]


@pytest.mark.parametrize(("case", "target", "backend"), PARAMS)
def test_saliency_matches_oracle_and_prediction_is_kept(
    zoo_models: Any, zoo_patched: Any, zoo_oracle: Any, case: Case, target: str, backend: str
) -> None:
    built = zoo_models(case)
    result = zoo_patched(case, target, backend)
    got = run(result.files[0], built.images, backend)
    module = (case.auto_module or case.auto) if target == "auto" else target
    want = zoo_oracle(case, module)
    # a class whose map is flat (SqueezeNet's ReLU'd class map can be zero everywhere) is compared all the same
    assert np.mean(want.maps.max(axis=(2, 3)) > 1.0 - 1e-9) >= 0.5, "mostly flat oracle maps: positions barely matter"
    want.check(got["saliency_map"], case.id)
    if backend not in built.plain:
        plain_file = built.onnx if backend == "onnxruntime" else _as_ir(built.onnx)  # converted as the export does
        built.plain[backend] = run(plain_file, built.images, backend)["logits"]
    np.testing.assert_array_equal(got["logits"], built.plain[backend])


def _as_ir(path: Path) -> Path:
    import openvino as ov

    ir = path.with_suffix(".xml")
    ov.save_model(ov.convert_model(str(path)), str(ir), compress_to_fp16=False)
    return ir
