"""The command line: inspect, export, and every kind of bad input (one-line error, exit 2, nothing lost)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import NETS, build_net, export_onnx, images
from oracle import reference
from runners import cli_fails as _fails
from runners import run

from ovxai.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def resnet(exported, tmp_path: Path) -> Path:
    """A private copy of the exported ResNet, so the tests can check it is never modified."""
    _, path = exported("resnet", "dynamo")
    folder = tmp_path / "in"
    folder.mkdir()
    for part in path.parent.glob(path.name + "*"):  # the model and its external data file
        (folder / part.name).write_bytes(part.read_bytes())
    copy = folder / path.name
    return copy


def test_export_writes_onnx_and_ir(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(resnet)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", "--model", str(resnet), "--layer", "layer4", "--output", str(out / "r.xml")]) == 0
    printed = capsys.readouterr().out
    assert "exact shortcut through the global pool" in printed and "32x4x4" in printed and "N = 16" in printed
    assert sorted(p.name for p in out.iterdir()) == ["r.bin", "r.xml"]  # no scratch files left
    assert main(["export", "-m", str(resnet), "-o", str(out / "r.onnx"), "--mask", "gaussian"]) == 0
    assert _digest(resnet) == before
    onnx.checker.check_model(str(out / "r.onnx"), full_check=True)
    model = onnx.load(str(out / "r.onnx"))
    assert [o.name for o in model.graph.output] == ["logits", "saliency_map", "feature_vector"]
    assert [i.name for i in model.graph.input] == ["input"]


def test_default_output_name(resnet: Path) -> None:
    assert main(["export", "--model", str(resnet)]) == 0
    assert (resnet.parent / f"{resnet.stem}_xai.onnx").is_file()


def test_inspect_lists_candidates(resnet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", str(resnet)]) == 0
    lines = capsys.readouterr().out.splitlines()
    default = [line for line in lines if line.startswith("* ") and line != "* = default"]
    assert len(default) == 1 and "layer4" in default[0] and "32x4x4" in default[0] and "mean" in default[0]
    # layer3 is followed by layer4's 3 x 3 convolutions: each copy is computed on windows (ovxai/incremental.py)
    assert any(line.split()[0] == "layer3" and "windows" in line for line in lines)


def test_path_mosaic_and_inspect_name_the_path(resnet: Path, tmp_path: Path, capsys) -> None:
    assert main(["inspect", "--model", str(resnet)]) == 0
    lines = capsys.readouterr().out.splitlines()
    tried = lines[lines.index("paths at the default target layer4, in the order tried (--path NAME asks for one):") + 1]
    assert tried.split()[0] == "mean" and tried.endswith("applies")
    assert main(["export", "-m", str(resnet), "-o", str(tmp_path / "g.onnx"), "--path", "mosaic"]) == 0
    assert "general path (full mosaic)" in capsys.readouterr().out
    assert main(["export", "-m", str(resnet), "-o", str(tmp_path / "m.onnx")]) == 0
    x = images(2, NETS["resnet"][1])
    fast, general = run(tmp_path / "m.onnx", x, "onnxruntime"), run(tmp_path / "g.onnx", x, "onnxruntime")
    np.testing.assert_array_equal(fast["logits"], general["logits"])
    with pytest.raises(SystemExit) as exited:
        main(["export", "-m", str(resnet), "--path", "fast"])
    assert exited.value.code == 2 and "argument --path: invalid choice: 'fast'" in capsys.readouterr().err


def test_unknown_input_channels_ask_for_the_input_shape(resnet: Path, tmp_path: Path, capsys) -> None:
    """An IR whose input is [?,?,?,?]: inspect and export give the same one-line advice."""
    import openvino as ov

    model = ov.convert_model(str(resnet))
    model.reshape({model.inputs[0]: ov.PartialShape.dynamic(4)})
    ov.save_model(model, str(tmp_path / "any.xml"))
    inspect = _fails(capsys, "inspect", "-m", str(tmp_path / "any.xml"))
    export = _fails(capsys, "export", "-m", str(tmp_path / "any.xml"), "-o", str(tmp_path / "p.xml"))
    assert "is [?,?,?,?]: its channels and size are unknown" in inspect and "--input-shape ?,3,224,224" in inspect
    assert export.split(": error: ")[1] == inspect.split(": error: ")[1]
    argv = ["export", "-m", str(tmp_path / "any.xml"), "-o", str(tmp_path / "p.xml"), "--input-shape", "?,3,128,128"]
    assert main(argv) == 0


def test_static_batch_model_becomes_dynamic(tmp_path: Path) -> None:
    net = build_net("effnet")
    path = tmp_path / "static.onnx"
    import torch

    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), dynamo=False, input_names=["input"])
    assert main(["export", "-m", str(path), "-o", str(tmp_path / "p.onnx")]) == 0
    x = images(3, 32)
    got = run(tmp_path / "p.onnx", x, "onnxruntime")
    reference(net, "_relu", x).check(got["saliency_map"])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_text("this is not a model\n" * 20), "not"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8), "not"),
    ],
    ids=["missing", "text", "binary"],
)
def test_unreadable_model(tmp_path, capsys, make, expected) -> None:
    path = tmp_path / "model.onnx"
    make(path)
    err = _fails(capsys, "export", "--model", str(path), "--output", str(tmp_path / "o.onnx"))
    assert expected in err
    assert not (tmp_path / "o.onnx").exists()


def test_truncated_model(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.onnx"
    data = resnet.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    err = _fails(capsys, "export", "--model", str(cut), "--output", str(tmp_path / "o.onnx"))
    assert "cut.onnx" in err


def test_missing_external_data(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = tmp_path / "split.onnx"
    onnx.save_model(onnx.load(str(resnet)), str(split), save_as_external_data=True, location="split.data")
    (tmp_path / "split.data").unlink()
    err = _fails(capsys, "export", "-m", str(split), "-o", str(tmp_path / "o.onnx"))
    assert "external weights" in err and ".data file" in err


def test_layer_errors(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(resnet)
    out = str(tmp_path / "o.onnx")
    err = _fails(capsys, "export", "-m", str(resnet), "-o", out, "--layer", "layer9")
    assert "'layer9' not found" in err and "closest:" in err and "layer4" in err
    err = _fails(capsys, "export", "-m", str(resnet), "-o", out, "--layer", "fc")
    assert "not a 4-D" in err
    # dynamo names both calls of the block's shared ReLU 'layer4.0.relu': two feature maps leave it
    err = _fails(capsys, "export", "-m", str(resnet), "-o", out, "--layer", "layer4.0.relu")
    assert "ambiguous" in err and "tensor name" in err
    assert not Path(out).exists() and _digest(resnet) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_output_path_errors(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(resnet)
    assert "would overwrite the input" in _fails(capsys, "export", "-m", str(resnet), "-o", str(resnet))
    assert "does not exist" in _fails(capsys, "export", "-m", str(resnet), "-o", str(tmp_path / "no/such/o.onnx"))
    assert ".onnx or .xml" in _fails(capsys, "export", "-m", str(resnet), "-o", str(tmp_path / "o.pt"))
    if not os.access("/proc", os.W_OK) or Path("/proc/ovxai-probe").exists():
        pytest.skip("needs a folder that refuses new files")
    assert "not writable" in _fails(capsys, "export", "-m", str(resnet), "-o", "/proc/o.onnx")
    assert _digest(resnet) == before


def test_no_classification_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = export_onnx(build_net("tiny").features, 32, tmp_path / "backbone.onnx", "legacy")
    err = _fails(capsys, "export", "-m", str(path), "-o", str(tmp_path / "o.onnx"))
    assert "no classification output" in err


def test_already_patched(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "-m", str(resnet), "-o", str(tmp_path / "p.onnx")]) == 0
    capsys.readouterr()
    assert "already has" in _fails(capsys, "export", "-m", str(tmp_path / "p.onnx"), "-o", str(tmp_path / "q.onnx"))


def test_failed_conversion_leaves_nothing(resnet: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from ovxai.errors import OvxaiError
    from ovxai.formats import openvino

    real = openvino.OPENVINO.convert

    def broken(onnx_path: Path):  # type: ignore[no-untyped-def]
        real(onnx_path)  # the patched ONNX model is complete in the scratch folder ...
        raise OvxaiError("OpenVINO could not convert the patched model: simulated")  # ... then conversion fails

    monkeypatch.setattr(openvino.OPENVINO, "convert", broken)
    out = tmp_path / "out"
    out.mkdir()
    assert "simulated" in _fails(capsys, "export", "-m", str(resnet), "-o", str(out / "p.xml"))
    assert list(out.iterdir()) == []


def test_console_script_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ovxai.cli", "export", "--model", str(tmp_path / "none.onnx")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    missing = tmp_path / "none.onnx"
    assert proc.stderr.strip() == f"ovxai export: error: model file '{missing}' not found; check the --model path"


def test_large_model_uses_external_data(tmp_path: Path, monkeypatch) -> None:
    """Models over protobuf's 2 GB go through ONNX external data, read and written (threshold lowered)."""
    from ovxai.formats import onnx as onnx_format

    net = build_net("tiny")
    path = export_onnx(net, 32, tmp_path / "big.onnx", "legacy")
    model = onnx.load(str(path))
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, size_threshold=0)
    monkeypatch.setattr(onnx_format, "_EXTERNAL_DATA_THRESHOLD", 1)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", "-m", str(tmp_path / "ext.onnx"), "-o", str(out / "p.onnx")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p.onnx", "p.onnx.data"]
    x = images(2, NETS["tiny"][1])
    got = run(out / "p.onnx", x, "onnxruntime")
    reference(net, "features", x).check(got["saliency_map"])


def test_channels_last_map_without_transpose_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["image"], ["nhwc_map"], name="act"),
            helper.make_node("ReduceMean", ["nhwc_map", "axes"], ["pooled"], name="pool", keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"], name="fc"),
        ],
        "channels_last",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 4, 4, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(rng.random((8, 10), dtype=np.float32), "w"),
        ],
    )
    path = tmp_path / "nhwc.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    err = _fails(capsys, "export", "-m", str(path), "-o", str(tmp_path / "o.onnx"))
    assert "channels-last (NHWC)" in err and "'pool'" in err


def test_export_from_torch_api_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from oracle import reference

    from ovxai import export_torch

    net = build_net("resnet")
    result = export_torch(net, torch.rand(2, 3, 128, 128), tmp_path / "api.onnx", layer="layer3")
    x = images(2, 128)
    got = run(result.files[0], x, "onnxruntime")["saliency_map"]
    reference(net, "layer3", x).check(got)

    argv = ["export", "--torch", "models.architectures:tiny_resnet", "--input-shape", "?,3,96,96"]
    assert main([*argv, "-o", str(tmp_path / "cli.xml")]) == 0
    assert "32x3x3" in capsys.readouterr().out  # layer4 of a 96 px input
    assert "--input-shape" in _fails(capsys, "export", "--torch", "models.architectures:tiny_resnet", "-o", "x.xml")
    assert "has no 'nothing'" in _fails(capsys, *argv, "--torch", "models.architectures:nothing", "-o", "x.xml")


def test_automatic_target_skips_a_shape_keeping_pool(tmp_path: Path) -> None:
    from ovxai import export

    net = build_net("vgg")  # features end at 2x2 for a 16 px input; avgpool (2, 2) then changes nothing
    path = export_onnx(net, 16, tmp_path / "vgg16px.onnx", "dynamo")
    result = export(path, tmp_path / "p.onnx")
    assert result.target.layer == "features" and result.target.shape[1:] == (32, 2, 2)


def test_the_summary_names_saliency_classes_only_when_the_model_has_them(resnet: Path, tmp_path: Path, capsys) -> None:
    """'--explain ALL' is every class (no saliency_classes output): the summary line said otherwise."""
    for spelled, listed in (("ALL", False), ("Top2", True)):
        out = tmp_path / f"{spelled}.onnx"
        assert main(["export", "--model", str(resnet), "--layer", "layer4", "--explain", spelled, "-o", str(out)]) == 0
        printed = capsys.readouterr().out
        outputs = [o.name for o in onnx.load(str(out)).graph.output]
        assert ("saliency_classes" in printed) == ("saliency_classes" in outputs) == listed, printed


def test_gradient_methods_export_inspect_and_explain(
    resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.xml"
    argv = [
        "export",
        "-m",
        str(resnet),
        "-o",
        str(out),
        "--layer",
        "layer3",
        "--method",
        "gradcam++",
        "--explain",
        "top1",
    ]
    assert main([*argv, "--mean", "0", "--scale", "255"]) == 0
    printed = capsys.readouterr().out
    assert "hook     gradcam++: the tail's backward in the graph, score logits (differentiated)" in printed
    assert main(["inspect", "--model", str(out)]) == 0
    assert "method   gradcam++, score logits, explains top1 classes" in capsys.readouterr().out
    photos = Path(__file__).resolve().parents[2] / "samples/photos"
    assert main(["explain", "-m", str(out), "-i", str(photos / "coffee.jpg"), "-o", str(tmp_path / "e")]) == 0
    assert "maps: gradcam++, score logits" in capsys.readouterr().out
    assert main(["inspect", "--model", str(resnet)]) == 0
    printed = capsys.readouterr().out
    assert "backward" in printed and "gradient methods at layer4 (--method gradcam, " in printed
    ig = ["export", "-m", str(resnet), "-o", str(tmp_path / "i.onnx"), "--method", "integrated-gradcam"]
    err = _fails(capsys, *ig)
    assert "integrates from a black image" in err and "give --mean and --scale" in err
    assert not (tmp_path / "i.onnx").exists()
    wrong = ["export", "-m", str(resnet), "-o", str(tmp_path / "w.onnx")]
    assert "--steps applies to --method integrated-gradcam, not gradcam" in _fails(
        capsys, *wrong, "--method", "gradcam", "--steps", "4"
    )
    assert "--mask gaussian applies to Recipro-CAM's masked copies" in _fails(
        capsys, *wrong, "--method", "layercam", "--mask", "gaussian"
    )
