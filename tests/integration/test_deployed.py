"""The artefacts OpenVINO users deploy, built the way their tools build them (issue 11): IRs converted
straight from PyTorch, INT8 IRs from NNCF, QDQ ONNX models from onnxruntime.quantization."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import pytest

torch = pytest.importorskip("torch")  # skipped, not failed, without torch
from conftest import build_net, images
from oracle import close, reference
from runners import run
from torch import nn

from models import routes
from ovxai import HookOptions, export, export_torch
from ovxai.cli import main
from ovxai.formats.openvino import OPENVINO
from ovxai.hook.target import candidates, pick_prediction

pytestmark = pytest.mark.slow
SIZE = 64


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return build_net("resnet")


@pytest.fixture(scope="module")
def converted(resnet: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FP32 IR from ``ov.convert_model(module)``: OpenVINO's recommended PyTorch path."""
    path = tmp_path_factory.mktemp("converted") / "resnet.xml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(resnet, example_input=torch.rand(1, 3, SIZE, SIZE))
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


@pytest.fixture(scope="module")
def int8(converted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same IR quantised to INT8 by NNCF's post-training quantisation, as OpenVINO recommends shipping."""
    pytest.importorskip("nncf")
    calibration = [images(1, SIZE, seed) for seed in range(4)]
    return routes.to_int8(converted, calibration, tmp_path_factory.mktemp("int8") / "resnet_int8.xml")


def _outputs(path: Path, x: np.ndarray, config: dict[str, str]) -> dict[str, np.ndarray]:
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    result = compiled(x)
    return {next(iter(sorted(o.get_names())), "prediction"): np.asarray(result[o]) for o in compiled.outputs}


def test_converted_ir_resolves_module_paths(converted: Path, resnet: nn.Module, tmp_path: Path) -> None:
    graph = OPENVINO.view(OPENVINO.load(converted))
    layers = {c.layer for c in candidates(graph, pick_prediction(graph, None))}
    assert {"layer3", "layer4", "layer2"} <= layers
    for layer in ("layer4", "layer3"):
        result = export(converted, tmp_path / f"{layer}.xml", layer=layer, fp16=False)
        x = images(2, SIZE)
        got = run(result.files[0], x, "openvino")["saliency_map"]
        reference(resnet, layer, x).check(got)


def test_export_torch_to_ir_converts_directly(resnet: nn.Module, tmp_path: Path, monkeypatch) -> None:
    from ovxai.exporter import from_torch as torch_export

    monkeypatch.setattr(torch_export, "to_onnx", lambda *a, **k: pytest.fail("no ONNX detour for an IR output"))
    result = export_torch(resnet, torch.rand(2, 3, SIZE, SIZE), tmp_path / "direct.xml", layer="layer4", fp16=False)
    assert result.fast_path
    x = images(3, SIZE)
    got = run(result.files[0], x, "openvino")["saliency_map"]
    reference(resnet, "layer4", x).check(got)


def test_int8_ir_keeps_its_prediction_and_the_fast_path(int8: Path, tmp_path: Path) -> None:
    graph = OPENVINO.view(OPENVINO.load(int8))
    assert "layer4" in {c.layer for c in candidates(graph, pick_prediction(graph, None))}
    result = export(int8, tmp_path / "p.xml", layer="layer4")
    assert result.fast_path, "a FakeQuantize between the map and the pool must not cost the fast path"
    assert result.target.tensor != "layer4"
    x = images(2, SIZE)
    for config in ({}, {"INFERENCE_PRECISION_HINT": "f32"}):  # the plugin's default (bf16 here) and f32
        plain, patched = _outputs(int8, x, config), _outputs(result.files[0], x, config)
        prediction = next(k for k in patched if k not in ("saliency_map", "feature_vector"))
        np.testing.assert_array_equal(patched[prediction], next(iter(plain.values())))


def test_int8_maps_follow_the_fp32_maps(int8: Path, converted: Path, tmp_path: Path) -> None:
    options = HookOptions(score="logits")
    fp32 = export(converted, tmp_path / "fp32.xml", layer="layer4", options=options, fp16=False)
    quantized = export(int8, tmp_path / "int8.xml", layer="layer4", options=options)
    x = images(4, SIZE, seed=7)
    a = run(fp32.files[0], x, "openvino")["saliency_map"]
    b = run(quantized.files[0], x, "openvino")["saliency_map"]
    r = [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(len(x))]
    assert min(r) > 0.8, r


def test_quantizer_that_moves_zero_is_tapped_before(converted: Path, resnet: nn.Module, tmp_path: Path) -> None:
    """A FakeQuantize whose range excludes 0 maps 0 elsewhere: masking must happen before it."""
    from openvino import opset13 as ops

    model = ov.Core().read_model(str(converted))
    pool = next(op for op in model.get_ordered_ops() if op.get_type_name() == "ReduceMean")
    source = pool.input_value(0)
    low, high = ops.constant(np.float32(0.5)), ops.constant(np.float32(8.0))
    fq = ops.fake_quantize(source, low, high, low, high, 256)
    pool.input(0).replace_source_output(fq.output(0))
    path = tmp_path / "shifted.xml"
    ov.save_model(model, str(path), compress_to_fp16=False)
    result = export(path, tmp_path / "p.xml", layer="layer4", fp16=False)
    assert result.target.tensor in source.get_names()
    assert result.path == "mean"  # the quantiser is a per-position op: the shortcut carries its FQ(0) = 0.5
    x = images(2, SIZE)
    got = run(result.files[0], x, "openvino")["saliency_map"]

    class Shifted(nn.Module):  # the oracle: the same network with the same quantiser before its pool
        def __init__(self) -> None:
            super().__init__()
            self.net = resnet

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = self.net
            t = n.layer4(n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))))
            q = torch.fake_quantize_per_tensor_affine(t.clamp(0.5, 8.0) - 0.5, 7.5 / 255, 0, 0, 255) + 0.5
            return n.fc(torch.flatten(n.avgpool(q), 1))

    shifted = Shifted().eval()
    reference(shifted, "net.layer4", x).check(got)


def test_onnx_qdq_model_from_onnxruntime_quantization(exported, tmp_path: Path) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")
    _, path = exported("resnet", "legacy")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": images(1, 128, seed)} for seed in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    qdq = tmp_path / "qdq.onnx"
    quantization.quantize_static(str(path), str(qdq), Reader(), quant_format=quantization.QuantFormat.QDQ)
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(qdq)).graph.node)
    result = export(qdq, tmp_path / "p.onnx", layer="layer4", options=HookOptions(score="logits"))
    assert result.fast_path
    assert result.target.tensor.endswith("DequantizeLinear_Output") or "DequantizeLinear" in result.target.tensor
    x = images(2, 128)
    plain, patched = run(qdq, x, "onnxruntime"), run(result.files[0], x, "onnxruntime")
    np.testing.assert_array_equal(patched["logits"], plain["logits"])
    fp32 = export(path, tmp_path / "f.onnx", layer="layer4", options=HookOptions(score="logits"))
    a, b = run(fp32.files[0], x, "onnxruntime")["saliency_map"], patched["saliency_map"]
    assert min(np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(2)) > 0.8


def test_convnext_style_head_never_gives_a_degenerate_map(tmp_path: Path) -> None:
    """Global pool, then a LayerNorm over channels through a permute to channels-last: (B, 1, 1, C) is no map."""

    class ConvNeXtHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.GELU(), nn.Conv2d(16, 16, 3, padding=1))
            self.norm = nn.LayerNorm(16)
            self.fc = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = self.stem(x).mean((2, 3), keepdim=True)  # (B, C, 1, 1)
            return self.fc(self.norm(pooled.permute(0, 2, 3, 1)).flatten(1))

    torch.manual_seed(0)
    net = ConvNeXtHead().eval()
    from conftest import export_onnx

    path = export_onnx(net, 32, tmp_path / "cnx.onnx", "dynamo")
    result = export(path, tmp_path / "p.onnx", options=HookOptions(score="logits"))
    assert result.target.layer == "stem" and result.target.chw == "16x8x8"
    x = images(2, 32)
    got = run(result.files[0], x, "onnxruntime")["saliency_map"]
    assert got.shape == (2, 5, 8, 8)
    reference(net, "stem", x, score="logits").check(got)


def test_fx_converted_ir_without_module_paths(resnet: nn.Module, tmp_path: Path, capsys) -> None:
    program = torch.export.export(resnet, (torch.rand(1, 3, SIZE, SIZE),))
    path = tmp_path / "fx.xml"
    ov.save_model(ov.convert_model(program), str(path), compress_to_fp16=False)
    assert main(["export", "-m", str(path), "-o", str(tmp_path / "p.xml"), "--layer", "layer4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "carries no PyTorch module paths" in err
    assert main(["export", "-m", str(path), "-o", str(tmp_path / "p.xml")]) == 0  # the automatic target still works


def test_int8_shortcut_equals_its_mosaic(int8: Path, resnet: nn.Module, tmp_path: Path) -> None:
    """The quantiser after the pool runs on the pooled map (graph.Shortcut.after): the same values as the mosaic."""
    options = HookOptions(score="logits")
    cut = export(int8, tmp_path / "cut.xml", layer="layer4", options=options)
    assert cut.path == "mean"
    mosaic = export(int8, tmp_path / "mosaic.xml", layer="layer4", options=HookOptions(score="logits", path="mosaic"))
    x = images(2, SIZE, seed=3)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    a, b = _outputs(cut.files[0], x, config), _outputs(mosaic.files[0], x, config)
    # the same quantised values on both paths: float32 summation order apart, as in the FP32 network's case
    close(a["saliency_map"], b["saliency_map"], reference(resnet, "layer4", x, score="logits").between_engines)
