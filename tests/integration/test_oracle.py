"""The exported saliency against the torch oracle (tests/oracle.py), in ONNX Runtime and OpenVINO."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import NETS, images
from oracle import NOISE_FACTOR, close, reference, reference_saliency
from runners import run

from ovxai import HookOptions, export

pytestmark = pytest.mark.slow  # end to end: torch export, both engines, oracle in torch

# (net, exporter, --layer, torch module the oracle hooks, which call of it, fast path expected)
CASES = [
    ("tiny", "dynamo", "features", "features", 0, True),
    ("tiny", "legacy", None, "features", 0, True),
    ("resnet", "dynamo", "layer4", "layer4", 0, True),
    ("resnet", "legacy", "layer3", "layer3", 0, True),  # layer4's convolutions on windows (ovxai/incremental.py)
    # inside a residual block: the skip path (downsample of layer3's output) is a tail side input
    ("resnet", "legacy", "layer4.0.relu", "layer4.0.relu", 0, False),
    ("vgg", "legacy", "features", "features", 0, False),
    ("effnet", "legacy", None, "_relu", 0, True),
    ("effnet", "dynamo", "_relu", "_relu", 0, True),
    ("mobilenet", "dynamo", None, "features", 0, True),
    # inside the network: the tail holds squeeze-excite blocks, whose global pools run on the mosaic
    ("mobilenet", "dynamo", "features.9", "features.9", 0, False),
]
IDS = [f"{c[0]}-{c[1]}-{c[2] or 'auto'}" for c in CASES]


def _export(model: Path, out: Path, layer: str | None, **options: object) -> Path:
    return export(model, out, layer=layer, options=HookOptions(**options)).files[0]  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_oracle_and_keeps_prediction(exported, tmp_path, case, backend) -> None:
    name, exporter, layer, module, call, fast = case
    net, path = exported(name, exporter)
    suffix = ".onnx" if backend == "onnxruntime" else ".xml"
    result = export(path, tmp_path / f"patched{suffix}", layer=layer, fp16=False)
    assert result.fast_path is fast
    x = images(3, NETS[name][1])
    got = run(result.files[0], x, backend)
    reference(net, module, x, call=call).check(got["saliency_map"])
    # The prediction output is the unpatched model's, bit for bit (same backend, same input).
    plain = path if backend == "onnxruntime" else _as_ir(path, tmp_path)
    np.testing.assert_array_equal(got["logits"], run(plain, x, backend)["logits"])


def _as_ir(path: Path, folder: Path) -> Path:
    import openvino as ov

    xml = folder / "plain.xml"
    ov.save_model(ov.convert_model(str(path)), str(xml), compress_to_fp16=False)
    return xml


@pytest.mark.parametrize("mask", ["onehot", "gaussian"])
@pytest.mark.parametrize("score", ["softmax", "logits", "sigmoid"])
@pytest.mark.parametrize(("name", "exporter", "layer"), [("resnet", "dynamo", "layer4"), ("vgg", "legacy", "features")])
def test_scores_masks_and_batch(exported, tmp_path, name, exporter, layer, score, mask) -> None:
    net, path = exported(name, exporter)
    out = _export(path, tmp_path / "p.onnx", layer, score=score, mask=mask)
    for batch in (1, 3):  # one model, any batch
        x = images(batch, NETS[name][1], seed=batch)
        got = run(out, x, "onnxruntime")["saliency_map"]
        reference(net, layer, x, score, mask).check(got)


@pytest.mark.parametrize("mask", ["onehot", "gaussian"])
def test_average_pool_with_full_kernel_takes_the_fast_path(tmp_path, mask) -> None:
    import torch
    from conftest import build_net, export_onnx

    net = build_net("tiny")
    net.avgpool = torch.nn.AvgPool2d(8)  # the whole 8x8 map: a global average written as AveragePool
    path = export_onnx(net, 32, tmp_path / "avgpool.onnx", "legacy")
    result = export(path, tmp_path / "p.onnx", options=HookOptions(mask=mask))
    assert result.fast_path
    x = images(2, 32)
    got = run(result.files[0], x, "onnxruntime")["saliency_map"]
    reference(net, "features", x, mask=mask).check(got)


FAST = [c for c in CASES if c[5]]


@pytest.mark.parametrize("case", FAST, ids=[IDS[CASES.index(c)] for c in FAST])
@pytest.mark.parametrize("mask", ["onehot", "gaussian"])
def test_fast_path_equals_general_path(exported, tmp_path, case, mask) -> None:
    name, exporter, layer, module, call, _ = case
    net, path = exported(name, exporter)
    result = export(path, tmp_path / "fast.onnx", layer=layer, options=HookOptions(mask=mask))
    fast = result.files[0]
    general = _export(path, tmp_path / "general.onnx", layer, mask=mask, path="mosaic")
    x = images(2, NETS[name][1])
    a, b = run(fast, x, "onnxruntime"), run(general, x, "onnxruntime")
    close(a["saliency_map"], b["saliency_map"], reference(net, module, x, mask=mask, call=call).between_engines)
    if result.path == "mosaic":
        # layer3's Gaussian windows cover layer4's whole 2 x 2 map: they would cost as much as the mosaic
        assert (name, layer, mask) == ("resnet", "layer3", "gaussian")
    else:  # no pool on the copies: at most the one of the hook's private copy of the map, for 'feature_vector'
        assert _tail_pools(fast) <= 1


def _tail_pools(path: Path) -> int:
    import onnx

    pools = ("GlobalAveragePool", "ReduceMean")
    return sum(n.op_type in pools for n in onnx.load(str(path)).graph.node if n.name.startswith("ovxai/tail/"))


def test_batch_gives_per_image_results(exported, tmp_path) -> None:
    net, path = exported("resnet", "legacy")
    out = _export(path, tmp_path / "p.onnx", "layer4.0.relu")
    x = images(4, NETS["resnet"][1], seed=7)
    together = run(out, x, "onnxruntime")["saliency_map"]
    alone = np.concatenate([run(out, x[i : i + 1], "onnxruntime")["saliency_map"] for i in range(4)])
    close(together, alone, reference(net, "layer4.0.relu", x).between_engines)  # other kernels for other batches


def test_uint8_saliency(exported, tmp_path) -> None:
    net, path = exported("tiny", "legacy")
    out = _export(path, tmp_path / "p.onnx", None, saliency_dtype="uint8")
    x = images(2, NETS["tiny"][1])
    got = run(out, x, "onnxruntime")["saliency_map"]
    assert got.dtype == np.uint8
    want = np.round(reference_saliency(net, "features", x) * 255)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_constant_map_gives_zeros_not_nan(tmp_path) -> None:
    import torch
    from conftest import build_net, export_onnx

    net = build_net("tiny")
    with torch.no_grad():
        net.classifier.weight.zero_()  # every masked copy scores the same: min == max
    path = export_onnx(net, 32, tmp_path / "flat.onnx", "legacy")
    got = run(_export(path, tmp_path / "p.onnx", None, score="logits"), images(2, 32), "onnxruntime")
    assert np.all(got["saliency_map"] == 0)


def test_one_model_explains_any_input_size(exported, tmp_path) -> None:
    net, path = exported("resnet", "legacy", dynamic_size=True)
    out = _export(path, tmp_path / "p.onnx", "layer4")
    for size in (96, 160):
        x = images(2, size)
        got = run(out, x, "onnxruntime")["saliency_map"]
        reference(net, "layer4", x).check(got)


def test_hook_adds_no_mask_constant(exported, tmp_path) -> None:
    import onnx

    _, path = exported("vgg", "legacy")
    out = _export(path, tmp_path / "p.onnx", "features", mask="gaussian")
    model = onnx.load(str(out))
    added = [
        i for i in model.graph.initializer if i.name.startswith("ovxai/") and i.data_type == onnx.TensorProto.FLOAT
    ]
    assert added and max(int(np.prod(i.dims)) for i in added) <= 4  # masks are built from the runtime shape
    onnx.checker.check_model(model, full_check=True)


@pytest.fixture(scope="session")
def efficientnet(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("efficientnet_lite_pytorch")
    from models import efficientnet_lite0 as recipe
    from ovxai.exporter.from_torch import to_onnx

    net = recipe.build()
    return net, to_onnx(net, tmp_path_factory.mktemp("real") / "efficientnet_lite0.onnx", recipe.SIZE)


@pytest.mark.parametrize("backend", ["openvino"])  # one engine: the point is real weights and code on a photo
def test_real_efficientnet_lite0_on_a_real_photo(efficientnet, tmp_path, backend) -> None:
    """Real ImageNet weights, the real model code (``x.view(bs, -1)`` with bs from the input), a real photo."""
    from PIL import Image

    from models import efficientnet_lite0 as recipe

    net, path = efficientnet
    photo = Image.open(Path(__file__).parents[2] / "samples/photos/chelsea_cat.jpg").convert("RGB").resize((224, 224))
    x = ((np.asarray(photo, dtype=np.float32) - recipe.MEAN) / recipe.SCALE).transpose(2, 0, 1)[None]
    x = np.concatenate([x, images(1, 224) * 2 - 1])  # batch 2: the photo and noise
    result = export(path, tmp_path / f"p{'.xml' if backend == 'openvino' else '.onnx'}", fp16=False)
    assert result.target.layer == "_swish" and result.fast_path
    got = run(result.files[0], x, backend)
    labels = (Path(__file__).parents[2] / "models/imagenet1k_labels.txt").read_text().splitlines()
    assert labels[int(got["logits"][0].argmax())] == "Egyptian cat"
    # the shared activation runs twice (stem, head): the target is its second call
    reference(net, "_swish", x, call=1).check(got["saliency_map"])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_feature_vector_is_the_pooled_features(exported, tmp_path, backend) -> None:
    import torch

    net, path = exported("resnet", "dynamo")
    result = export(path, tmp_path / ("p.onnx" if backend == "onnxruntime" else "p.xml"), fp16=False)
    x = images(3, NETS["resnet"][1])
    pooled: list[np.ndarray] = []
    handle = net.avgpool.register_forward_hook(lambda _m, _i, out: pooled.append(out.flatten(1).double().numpy()))
    with torch.no_grad():
        net(torch.from_numpy(x))
        copy.deepcopy(net).double()(torch.from_numpy(x).double())  # the copy keeps the hook: float64 features
    handle.remove()
    single, exact = pooled
    tolerance = (
        NOISE_FACTOR * float(np.abs(single - exact).max()) + 8 * float(np.finfo(np.float32).eps) * abs(exact).max()
    )
    close(run(result.files[0], x, backend)["feature_vector"], exact, tolerance, "feature_vector")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_channels_last_map_steps_back_to_nchw(exported, tmp_path, exporter, backend) -> None:
    import onnx

    net, path = exported("nhwc", exporter)
    transposed = next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Transpose")
    for layer in (None, transposed):  # automatic, and the NHWC tensor named explicitly
        out = tmp_path / ("p.onnx" if backend == "onnxruntime" else "p.xml")
        result = export(path, out, layer=layer, fp16=False)
        assert result.target.tensor != transposed and result.target.shape[1:] == (32, 8, 8)
        x = images(2, 32)
        got = run(result.files[0], x, backend)["saliency_map"]
        reference(net, "features", x).check(got)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_model_ending_in_softmax_is_scored_on_its_logits(tmp_path, backend) -> None:
    import torch
    from conftest import build_net, export_onnx

    net = build_net("resnet")
    with_softmax = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    path = export_onnx(with_softmax, 128, tmp_path / "probabilities.onnx", "dynamo")
    out = tmp_path / ("p.onnx" if backend == "onnxruntime" else "p.xml")
    result = export(path, out, layer="0.layer4", fp16=False)
    x = images(2, 128)
    got = run(result.files[0], x, backend)["saliency_map"]
    reference(net, "layer4", x).check(got)
