"""Hugging Face ``transformers`` image classifiers through the three torch routes (issue 19).

Each model (models/hf.py: the library's own classes from small configs, random weights) is written by
``torch.onnx.export`` (legacy TorchScript and dynamo) and ``ov.convert_model(module)``, then patched by
``ovxai.export`` with the automatic target. Every cell either exports with the model's expected target and path
(the same on every route), the prediction output bit-identical to the plain model's in the same engine and the
maps equal to the float64 torch oracle (``oracle.reference_vit_saliency``: the block's input and first norm
masked; ``reference_saliency`` for a CNN target), or is refused in one line that says why and what to do, with
nothing written. Scores are logits (random weights: softmax maps would be rounding noise).

Quick cells cover each cause once (the dynamo attention mask, a relative position bias, Swin's merged grid,
LeViT's norm-free blocks, MobileViT's CNN target, a legacy file that lost its token count); the rest are slow.
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
for _package in ("torchvision", "transformers"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"the Hugging Face tests need {_package} (the dev extra)", allow_module_level=True)

from oracle import reference_saliency, reference_vit_saliency
from runners import run

from models import hf as hf_zoo
from ovxai import HookOptions, export
from ovxai.errors import OvxaiError
from ovxai.exporter.from_torch import to_ir, to_onnx
from ovxai.exporter.pipeline import ExportResult

BATCH = 3
ROUTES = ("legacy", "dynamo", "ir")
NOISE_FACTOR = 3.0  # the engines' float32 rounding against the float64 oracle, in units of torch's own
# the smallest rounding a [0, 1] map shows after a min-max over a few float32 logits (a few ulps of 1)
ROUNDING_FLOOR = 64 * float(np.finfo(np.float32).eps)

# name -> (path, target) on every route that keeps the shapes it needs
EXPECTED = {
    "vit": ("tokens", hf_zoo.CASES["vit"].block),
    "deit": ("tokens", hf_zoo.CASES["deit"].block),
    "beit": ("mosaic", hf_zoo.CASES["beit"].block),  # relative position bias: the short sequence declines
    "beit_abs": ("tokens", hf_zoo.CASES["beit_abs"].block),
    "dinov2": ("tokens", hf_zoo.CASES["dinov2"].block),
    "swin": ("mosaic", hf_zoo.CASES["swin"].block),  # windows: a token's place matters
    "levit": ("mosaic", hf_zoo.CASES["levit"].block),  # attention biases
    "mobilevit": ("mean", "model.mobilevit.conv_1x1_exp"),  # a CNN with inner transformers
}
QUICK = frozenset({("vit", "dynamo"), ("beit", "ir"), ("swin", "ir"), ("levit", "ir"), ("mobilevit", "legacy"),
                   ("beit", "legacy")})  # fmt: skip


@dataclass
class Built:
    net: Any
    images: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(name, route) -> Built with the plain model written on that route (None: none), once per session."""
    folder = tmp_path_factory.mktemp("hf")
    cache: dict[str, Built] = {}

    def get(name: str, route: str | None) -> Built:
        if name not in cache:
            size = hf_zoo.CASES[name].size
            images = np.random.default_rng(2).random((BATCH, 3, size, size), dtype=np.float32)
            cache[name] = Built(hf_zoo.build(name), images)
        built = cache[name]
        if route is not None and route not in built.files:
            example = hf_zoo.example(name, 2)
            if route == "ir":
                built.files[route] = to_ir(built.net, folder / f"{name}.xml", example)
            else:
                built.files[route] = to_onnx(built.net, folder / f"{name}-{route}.onnx", example, route)
        return built

    return get


@pytest.fixture(scope="session")
def hf_oracle(hf_models: Any) -> Any:
    """(name, layer) -> (float64 maps, float32 noise), Gaussian masks, logits scores."""
    cache: dict[tuple[str, str], tuple[np.ndarray, float]] = {}

    def get(name: str, layer: str) -> tuple[np.ndarray, float]:
        if (name, layer) not in cache:
            case, built = hf_zoo.CASES[name], hf_models(name, None)
            wide = copy.deepcopy(built.net).double()
            images = built.images
            if case.block is None:
                exact = reference_saliency(wide, layer, images.astype(np.float64), "logits", "gaussian")
                single = reference_saliency(built.net, layer, images, "logits", "gaussian")
            else:
                norm = case.norm if layer == case.block else None
                where = (layer, norm)
                exact = reference_vit_saliency(wide, *where, images.astype(np.float64), "logits", "gaussian",
                                               case.aux_tokens)  # fmt: skip
                single = reference_vit_saliency(built.net, *where, images, "logits", "gaussian", case.aux_tokens)
            cache[(name, layer)] = (exact, float(np.abs(single - exact).max()))
        return cache[(name, layer)]

    return get


def _plain_prediction(path: Path, images: np.ndarray, engine: str) -> np.ndarray:
    if engine == "onnxruntime":
        return run(path, images, engine)["logits"]
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(images)[0])


def _cell(name: str, route: str) -> Any:
    marks = [] if (name, route) in QUICK else [pytest.mark.slow]
    return pytest.param(name, route, id=f"{name}-{route}", marks=marks)


@pytest.mark.parametrize(("name", "route"), [_cell(n, r) for n in EXPECTED for r in ROUTES])
def test_route(hf_models: Any, hf_oracle: Any, tmp_path: Path, name: str, route: str) -> None:
    built = hf_models(name, route)
    out = tmp_path / f"xai{'.xml' if route == 'ir' else '.onnx'}"
    options = HookOptions(score="logits", mask="gaussian")
    result: ExportResult = export(built.files[route], out, options=options, fp16=False)
    path, target = EXPECTED[name]
    assert (result.path, result.target.layer) == (path, target), result
    assert result.grid == (None if hf_zoo.CASES[name].block is None else hf_zoo.CASES[name].grid)
    engine = "openvino" if route == "ir" else "onnxruntime"
    outputs = run(result.files[0], built.images, engine)
    plain = _plain_prediction(built.files[route], built.images, engine)
    np.testing.assert_array_equal(outputs[result.prediction], plain)  # FP32 weights (fp16=False): bit for bit
    exact, noise = hf_oracle(name, target)
    maps = outputs["saliency_map"]
    assert maps.shape == exact.shape
    assert np.mean(exact.max(axis=(2, 3)) == 1.0) >= 0.9, "mostly flat oracle maps: positions barely matter"
    diff, tolerance = float(np.abs(maps - exact).max()), max(NOISE_FACTOR * noise, ROUNDING_FLOOR)
    assert diff <= tolerance, f"max |map - oracle| = {diff:.3g} > {tolerance:.3g} (float32 noise {noise:.3g})"


def test_beit_block_named(hf_models: Any, tmp_path: Path) -> None:
    """``--layer`` a BEiT block: explained on the general path (its relative position bias), not refused as
    'not a 4-D float feature map'; forcing the short sequence says why it does not apply."""
    source = hf_models("beit", "ir").files["ir"]
    result = export(source, tmp_path / "b.xml", layer="model.beit.layers.1", options=HookOptions(score="logits"))
    assert (result.path, result.target.layer, result.grid) == ("mosaic", "model.beit.layers.1", (4, 4))
    with pytest.raises(OvxaiError, match=r"path=tokens does not apply here: .*position bias"):
        export(source, tmp_path / "t.xml", options=HookOptions(path="tokens"))
    assert not (tmp_path / "t.xml").exists()


def test_free_size_asks_for_input_shape(tmp_path: Path) -> None:
    """An IR converted with a free image size: the grid is unknown until the size is pinned, and the refusal
    says so; pinned with ``input_shape``, the short sequence applies."""
    net = hf_zoo.build("vit")
    source = to_ir(net, tmp_path / "free.xml", hf_zoo.example("vit", 2), dynamic_size=True)
    with pytest.raises(OvxaiError) as error:
        export(source, tmp_path / "o.xml")
    assert "--input-shape" in str(error.value) and "grid" in str(error.value), error.value
    pinned = export(source, tmp_path / "o.xml", input_shape=["batch", 3, 32, 32])
    assert (pinned.path, pinned.grid) == ("tokens", (4, 4))


@pytest.mark.parametrize(
    "name", [pytest.param("convnext", marks=pytest.mark.slow), pytest.param("resnet", marks=pytest.mark.slow),
             "efficientnet"],
)  # fmt: skip
def test_cnns_are_not_transformers(hf_models: Any, name: str) -> None:
    """Hugging Face CNNs: no transformer blocks, so the CNN path places the target at a feature map."""
    from ovxai.formats import format_for
    from ovxai.hook.target import pick_prediction
    from ovxai.hook.tokens import plan_tokens, transformer_blocks

    source = hf_models(name, "legacy").files["legacy"]
    fmt = format_for(source)
    graph = fmt.view(fmt.load(source))
    prediction = pick_prediction(graph, None)
    assert transformer_blocks(graph, prediction) == [] and plan_tokens(graph, prediction, None) is None


def test_inspect_names_paths_and_hybrids(hf_models: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Transformers: each path at the default block with why it applies or not. MobileViT: its CNN target."""
    from ovxai.cli import main

    assert main(["inspect", "--model", str(hf_models("beit", "ir").files["ir"])]) == 0
    out = capsys.readouterr().out
    assert "paths at the default block model.beit.layers.2" in out, out
    assert "tokens" in out and "position bias" in out and "mosaic" in out and "applies" in out, out
    assert main(["inspect", "--model", str(hf_models("mobilevit", "legacy").files["legacy"])]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("* ") and line != "* = default"]
    assert len(rows) == 1 and "model.mobilevit.conv_1x1_exp" in rows[0] and "mean" in rows[0], rows
