"""The OpenVINO-native path: IR in, IR out, through the same hook as ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from conftest import NETS, images
from oracle import NOISE_FACTOR, close, lower_precision_shift, reference
from runners import run

from ovxai import HookOptions, export
from ovxai.cli import main

pytestmark = pytest.mark.slow  # end to end: torch export, IR in and IR out, oracle in torch

# (net, exporter, --layer on the IR, torch module for the oracle, fast path expected)
CASES = [
    ("resnet", "legacy", "layer4", "layer4", True),  # module paths survive as OpenVINO friendly names
    ("resnet", "legacy", "layer4.0.relu", "layer4.0.relu", False),  # skip path as a side input
    ("vgg", "legacy", "features", "features", False),
    ("effnet", "dynamo", None, "_relu", True),  # batch read from the input's shape
]
IDS = [f"{c[0]}-{c[2] or 'auto'}" for c in CASES]


def as_ir(onnx_path: Path, xml: Path) -> Path:
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


@pytest.mark.parametrize("mask", ["onehot", "gaussian"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ir_in_ir_out_matches_oracle_and_onnx_path(exported, tmp_path, case, mask) -> None:
    name, exporter, layer, module, fast = case
    net, onnx_path = exported(name, exporter)
    plain = as_ir(onnx_path, tmp_path / "plain.xml")
    options = HookOptions(mask=mask)
    result = export(plain, tmp_path / "patched.xml", layer=layer, options=options, fp16=False)
    assert result.fast_path is fast
    x = images(3, NETS[name][1])
    got = run(result.files[0], x, "openvino")
    exact = reference(net, module, x, mask=mask)
    exact.check(got["saliency_map"])
    via_onnx = export(onnx_path, tmp_path / "via_onnx.onnx", layer=layer, options=options)
    close(got["saliency_map"], run(via_onnx.files[0], x, "onnxruntime")["saliency_map"], exact.between_engines)
    np.testing.assert_array_equal(got["logits"], run(plain, x, "openvino")["logits"])


def test_ir_general_path_equals_fast_path(exported, tmp_path) -> None:
    net, onnx_path = exported("resnet", "legacy")
    plain = as_ir(onnx_path, tmp_path / "plain.xml")
    fast = export(plain, tmp_path / "fast.xml", layer="layer4", fp16=False)
    general = export(plain, tmp_path / "general.xml", layer="layer4", fp16=False, options=HookOptions(path="mosaic"))
    x = images(2, NETS["resnet"][1])
    close(
        run(fast.files[0], x, "openvino")["saliency_map"],
        run(general.files[0], x, "openvino")["saliency_map"],
        reference(net, "layer4", x).between_engines,
    )


@pytest.mark.parametrize("source", ["onnx", "ir"])
def test_static_batch_compiles_on_cpu_and_auto(exported, tmp_path, source) -> None:
    net, onnx_path = exported("resnet", "legacy")
    model = onnx_path if source == "onnx" else as_ir(onnx_path, tmp_path / "plain.xml")
    result = export(model, tmp_path / "static.xml", layer="layer4", static_batch=2, fp16=False)
    core = ov.Core()
    patched = core.read_model(str(result.files[0]))
    assert not patched.is_dynamic()
    assert [list(o.get_shape()) for o in patched.outputs] == [[2, 10], [2, 10, 4, 4], [2, 32]]
    x = images(2, NETS["resnet"][1])
    exact = reference(net, "layer4", x)
    bf16 = NOISE_FACTOR * lower_precision_shift(net, "layer4", x, exact, weights_only=False) + exact.tolerance
    for device in ("CPU", "AUTO"):
        compiled = core.compile_model(patched, device, {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {})
        saliency = compiled(x)["saliency_map"]
        if device == "CPU":
            exact.check(saliency)
        else:  # AUTO may pick a lower inference precision (bf16 on CPUs that have it)
            close(saliency, exact.maps, bf16)


def test_fp16_weights_by_default(exported, tmp_path) -> None:
    net, onnx_path = exported("resnet", "legacy")
    fp16 = export(onnx_path, tmp_path / "half.xml", layer="layer4")
    fp32 = export(onnx_path, tmp_path / "full.xml", layer="layer4", fp16=False)
    half_bin, full_bin = fp16.files[0].with_suffix(".bin"), fp32.files[0].with_suffix(".bin")
    assert half_bin.stat().st_size < 0.6 * full_bin.stat().st_size
    x = images(2, NETS["resnet"][1])
    got = run(fp16.files[0], x, "openvino")["saliency_map"]
    exact = reference(net, "layer4", x)
    shift = lower_precision_shift(net, "layer4", x, exact, weights_only=True)
    close(got, exact.maps, NOISE_FACTOR * shift + exact.tolerance)


def test_ir_explains_any_input_size(exported, tmp_path) -> None:
    net, onnx_path = exported("resnet", "legacy", dynamic_size=True)
    plain = as_ir(onnx_path, tmp_path / "plain.xml")
    result = export(plain, tmp_path / "p.xml", layer="layer4", fp16=False)
    for size in (96, 160):
        x = images(2, size)
        got = run(result.files[0], x, "openvino")["saliency_map"]
        reference(net, "layer4", x).check(got)


def test_hook_adds_no_constant_larger_than_n_h_w(exported, tmp_path) -> None:
    _, onnx_path = exported("vgg", "legacy")
    plain = as_ir(onnx_path, tmp_path / "plain.xml")
    result = export(plain, tmp_path / "p.xml", layer="features", fp16=False, options=HookOptions(mask="gaussian"))
    model = ov.Core().read_model(str(result.files[0]))
    own = [op.get_byte_size() for op in model.get_ordered_ops()
           if op.get_type_name() == "Constant" and op.get_friendly_name().startswith("ovxai/")]  # fmt: skip
    n = 4 * 4
    assert own and max(own) <= n * 4 * 4 * 8
    # The tail's copy keeps its own constant nodes, but the IR stores identical weights once.
    grown = tmp_path.joinpath("p.bin").stat().st_size - tmp_path.joinpath("plain.bin").stat().st_size
    assert 0 < grown <= sum(own) + 1024


def test_ir_bad_input(exported, tmp_path, capsys) -> None:
    _, onnx_path = exported("resnet", "legacy")
    plain = as_ir(onnx_path, tmp_path / "plain.xml")
    bin_path = plain.with_suffix(".bin")
    data = bin_path.read_bytes()

    def fails(*argv: str) -> str:
        assert main(list(argv)) == 2
        return capsys.readouterr().err.strip()

    assert "IR output" in fails("export", "-m", str(plain), "-o", str(tmp_path / "p.onnx"))
    bin_path.write_bytes(data[: len(data) // 3])
    assert "does not belong" in fails("export", "-m", str(plain), "-o", str(tmp_path / "p.xml"))
    bin_path.unlink()
    err = fails("export", "-m", str(plain), "-o", str(tmp_path / "p.xml"))
    assert "plain.bin" in err and "missing" in err
    assert not (tmp_path / "p.xml").exists()


def test_static_batch_ir_gets_a_dynamic_batch(tmp_path) -> None:
    """EfficientNet's ``x.view(bs, -1)`` exported with batch 1 bakes [1, -1] into a Reshape."""
    import torch
    from conftest import build_net

    net = build_net("effnet")
    onnx_path = tmp_path / "static.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(onnx_path), dynamo=False, input_names=["input"])
    plain = as_ir(onnx_path, tmp_path / "plain.xml")
    assert ov.Core().read_model(str(plain)).inputs[0].get_partial_shape()[0].get_length() == 1
    result = export(plain, tmp_path / "p.xml", fp16=False)
    x = images(3, 32)
    got = run(result.files[0], x, "openvino")
    reference(net, "_relu", x).check(got["saliency_map"])


@pytest.mark.parametrize("output", ["p.xml", "p.onnx"])
def test_dynamic_size_frees_a_static_input(exported, tmp_path, output) -> None:
    net, onnx_path = exported("resnet", "dynamo")  # exported at 128 x 128
    assert main(["export", "-m", str(onnx_path), "-o", str(tmp_path / output), "--dynamic-size", "--no-fp16"]) == 0
    for size in (96, 160):
        x = images(1, size)
        got = run(tmp_path / output, x, "openvino" if output.endswith(".xml") else "onnxruntime")
        reference(net, "layer4", x).check(got["saliency_map"])


def test_inspect_ir_agrees_with_onnx(exported, tmp_path, capsys) -> None:
    _, onnx_path = exported("resnet", "legacy")
    plain = as_ir(onnx_path, tmp_path / "plain.xml")
    rows = {}
    for model in (onnx_path, plain):
        assert main(["inspect", "-m", str(model)]) == 0
        lines = capsys.readouterr().out.splitlines()
        rows[model.suffix] = {line.split()[1]: line.split()[2:6] for line in lines if line.startswith("*")}
    assert rows[".onnx"] == rows[".xml"] and "layer4" in rows[".xml"]


def test_static_batch_onnx_output_declares_static_shapes(exported, tmp_path) -> None:
    import onnx

    _, onnx_path = exported("resnet", "dynamo")
    out = export(onnx_path, tmp_path / "static.onnx", static_batch=3).files[0]
    model = onnx.load(str(out))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), value.name
    assert run(out, images(3, NETS["resnet"][1]), "onnxruntime")["saliency_map"].shape == (3, 10, 4, 4)
