"""The exporter's guarantees under careless and hostile use (issue 9): the input is never modified, nothing
is written unless the model runs, arguments are checked up front, every error is one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import pytest

torch = pytest.importorskip("torch")  # skipped, not failed, without torch
from conftest import build_net, export_onnx, images
from oracle import reference
from runners import cli_fails as _fails
from runners import run
from torch import nn

from ovxai.cli import main

REPO = Path(__file__).resolve().parents[2]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def tiny(exported, tmp_path: Path) -> Path:
    """A private copy of the tiny CNN in its own folder."""
    _, path = exported("tiny", "legacy")
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "tiny.onnx").write_bytes(path.read_bytes())
    return folder / "tiny.onnx"


class TokenClassifier(nn.Module):
    """ViT-like: a patch embedding, then tokens only (no 4-D map after the first layer), attention, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, stride=8)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        q = tokens.reshape(tokens.shape[0], tokens.shape[1], 2, 8).permute(0, 2, 1, 3)
        scores = torch.softmax(q @ q.transpose(-1, -2), -1)  # (B, heads, T, T): 4-D, float, not a map
        mixed = (scores @ q).permute(0, 2, 1, 3).reshape(tokens.shape)
        return self.head(mixed.mean(1))


def test_output_differing_in_case_only_is_written_under_the_given_name(tiny: Path, capsys) -> None:
    before = _digest(tiny.parent)
    upper = tiny.with_suffix(".ONNX")
    assert main(["export", "-m", str(tiny), "-o", str(upper)]) == 0
    after = _digest(tiny.parent)
    assert after["tiny.onnx"] == before["tiny.onnx"]  # the input is untouched
    assert set(after) == {"tiny.onnx", "tiny.ONNX"}
    assert "saliency_map" in run(upper, images(1, 32), "onnxruntime")


def test_upper_case_ir_suffix(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.XML"
    assert main(["export", "-m", str(tiny), "-o", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.glob("m.*")) == ["m.XML", "m.bin"]
    import openvino as ov

    model = ov.Core().read_model(str(out), str(tmp_path / "m.bin"))
    assert "saliency_map" in {n for o in model.outputs for n in o.get_names()}


def test_output_reaching_the_input_by_a_link_is_refused(tiny: Path, capsys) -> None:
    before = _digest(tiny.parent)
    link = tiny.parent / "alias.onnx"
    link.symlink_to(tiny)
    assert "would overwrite the input" in _fails(capsys, "export", "-m", str(tiny), "-o", str(link))
    hard = tiny.parent / "hard.onnx"
    os.link(tiny, hard)
    assert "would overwrite the input" in _fails(capsys, "export", "-m", str(tiny), "-o", str(hard))
    dotted = tiny.parent / ".." / tiny.parent.name / tiny.name
    assert "would overwrite the input" in _fails(capsys, "export", "-m", str(tiny), "-o", str(dotted))
    assert {k: v for k, v in _digest(tiny.parent).items() if k in before} == before


def test_ir_output_sharing_the_inputs_weights_is_refused(tiny: Path, tmp_path: Path, capsys) -> None:
    ir = tmp_path / "ir"
    ir.mkdir()
    assert main(["export", "-m", str(tiny), "-o", str(ir / "first.xml")]) == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    import openvino as ov

    ov.save_model(ov.convert_model(str(tiny)), str(plain / "a.xml"))
    os.link(plain / "a.bin", plain / "b.bin")  # b.xml's weights would be a.xml's
    before = _digest(plain)
    assert "would overwrite the input" in _fails(
        capsys, "export", "-m", str(plain / "a.xml"), "-o", str(plain / "b.xml")
    )
    assert _digest(plain) == before


def test_output_onto_a_folder(tiny: Path, capsys) -> None:
    err = _fails(capsys, "export", "-m", str(tiny), "-o", str(tiny.parent))
    assert "is a folder" in err and "disk space" not in err


def test_token_model_target_is_never_inside_the_attention(tmp_path: Path, capsys) -> None:
    """The (B, heads, T, T) attention scores are 4-D floats too; the target must be a map whose H, W are the image's."""
    torch.manual_seed(0)
    net = TokenClassifier().eval()
    path = export_onnx(net, 32, tmp_path / "vit.onnx", "legacy")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", "-m", str(path), "-o", str(out / "v.onnx"), "--score", "logits"]) == 0
    assert "target   patch ->" in capsys.readouterr().out
    x = images(2, 32)
    got = run(out / "v.onnx", x, "onnxruntime")["saliency_map"]
    reference(net, "patch", x, score="logits").check(got)
    attention = next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax")
    err = _fails(capsys, "export", "-m", str(path), "-o", str(out / "w.onnx"), "--layer", attention)
    assert "last two axes are not the image's height and width" in err
    assert not (out / "w.onnx").exists()


def test_a_patched_model_that_cannot_run_is_never_written(tiny: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from ovxai.hook.recipro import ReciproCamHook

    def broken_masks(self):  # type: ignore[no-untyped-def]  # valid ONNX, fails at run time (N*N is not a multiple of 7)
        return self.ops.reshape(real_masks(self), self.ops.i64([7, -1]))

    real_masks = ReciproCamHook.masks.func
    monkeypatch.setattr(ReciproCamHook, "masks", property(broken_masks))
    out = tmp_path / "o"
    out.mkdir()
    argv = ["-m", str(tiny), "--layer", "features", "--mask", "gaussian"]
    err = _fails(capsys, "export", *argv, "-o", str(out / "p.onnx"))
    assert "the patched model does not run in ONNX on a 2,3,32,32 input" in err
    assert "OpenVINO" in _fails(capsys, "export", *argv, "-o", str(out / "p.xml"))  # its converter refuses it already
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--static-batch", "0"], "--static-batch 0 asks for no image"),
        (["--static-batch", "-1"], "--static-batch -1 asks for no image"),
        (["--input-shape", "?,4,32,32"], "4 channels but the network takes 3"),
        (["--input-shape", "3,32,32"], "--input-shape has 3 dimensions"),
        (["--scale", "0"], "divides by zero"),
        (["--mean", "nan"], "is not finite"),
        (["--mean", "1,2"], "takes 1 or 3 values"),
        (["--layer", "avgpool"], "H x W = 1"),
    ],
)
def test_arguments_are_checked_before_any_work(tiny: Path, tmp_path: Path, capsys, argv, expected) -> None:
    out = tmp_path / "o"
    out.mkdir()
    err = _fails(capsys, "export", "-m", str(tiny), "-o", str(out / "p.onnx"), *argv)
    if expected:
        assert expected in err
    assert list(out.iterdir()) == []


def test_torch_needs_a_4d_input_shape(tmp_path: Path, capsys) -> None:
    err = _fails(
        capsys, "export", "--torch", "models.architectures:resnet18", "--input-shape", "3,32,32", "-o", "x.xml"
    )
    assert "4-D --input-shape" in err


def test_torch_without_onnxscript(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    monkeypatch.chdir(REPO)
    out = tmp_path / "t.onnx"
    err = _fails(
        capsys, "export", "--torch", "models.architectures:TinyCNN", "--input-shape", "?,3,32,32", "-o", str(out)
    )
    assert "pip install onnxscript" in err
    assert not out.exists()


def test_torch_factory_imports_from_the_working_folder(tmp_path: Path) -> None:
    (tmp_path / "mynets.py").write_text(
        "import torch\n"
        "def small():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),\n"
        "                               torch.nn.Flatten(), torch.nn.Linear(4, 3))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-m", "ovxai.cli", "export", "--torch", "mynets:small", "--input-shape", "?,3,16,16"]
    proc = subprocess.run([*cmd, "-o", "s.onnx"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.onnx").is_file()


def test_old_opset_declares_a_4d_saliency_map(tmp_path: Path) -> None:
    net = build_net("tiny")
    path = tmp_path / "old.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), dynamo=False, opset_version=11,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "b"}})  # fmt: skip
    out = tmp_path / "p.onnx"
    assert main(["export", "-m", str(path), "-o", str(out)]) == 0
    declared = next(o for o in onnx.load(str(out)).graph.output if o.name == "saliency_map")
    assert len(declared.type.tensor_type.shape.dim) == 4
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 1  # warnings and above
    script = (
        "import onnxruntime as ort, numpy as np; o = ort.SessionOptions(); o.log_severity_level = 1; "
        f"s = ort.InferenceSession({str(out)!r}, o, providers=['CPUExecutionProvider']); "
        "s.run(None, {'input': np.zeros((2, 3, 32, 32), np.float32)})"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "saliency_map" not in proc.stderr, proc.stderr  # ONNX Runtime's shape-mismatch warning
    x = images(2, 32)
    reference(net, "features", x).check(run(out, x, "onnxruntime")["saliency_map"])


def test_if_node_in_the_head_is_named(tmp_path: Path, capsys) -> None:
    from onnx import TensorProto, helper

    branch = helper.make_graph(
        [helper.make_node("Flatten", ["pooled"], ["flat"])], "b", [], [helper.make_tensor_value_info("flat", 1, None)]
    )
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["image"], ["map"], name="act"),
            helper.make_node("GlobalAveragePool", ["map"], ["pooled"], name="pool"),
            helper.make_node("If", ["cond"], ["scores"], name="choose_head", then_branch=branch, else_branch=branch),
        ],
        "if_head",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", 3])],
        [helper.make_tensor("cond", TensorProto.BOOL, [], [True])],
    )
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert "'choose_head' (If)" in _fails(capsys, "export", "-m", str(path), "-o", str(tmp_path / "o.onnx"))


def test_inspect_a_patched_model_says_so(tiny: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", "-m", str(tiny), "-o", str(tmp_path / "p.onnx")]) == 0
    capsys.readouterr()
    assert main(["inspect", "-m", str(tmp_path / "p.onnx")]) == 0  # its record, not the layers of a hooked graph
    printed = capsys.readouterr().out
    assert "exported by ovxai with a 'saliency_map' output" in printed and "method   recipro" in printed


def test_inspect_counts_a_dynamic_size_model_at_224(tmp_path: Path, capsys) -> None:
    path = export_onnx(build_net("effnet"), 32, tmp_path / "any.onnx", "dynamo", dynamic_size=True)
    capsys.readouterr()
    assert main(["inspect", "-m", str(path)]) == 0
    free = capsys.readouterr().out
    assert main(["inspect", "-m", str(path), "--input-shape", "?,3,224,224"]) == 0
    pinned = capsys.readouterr().out
    macs = float(free.split("', ")[1].split(" M MACs")[0])
    assert macs == float(pinned.split("', ")[1].split(" M MACs")[0])
    assert macs > 2.7  # the stem convolution alone: 3x3x3 x 8 channels x 112 x 112
    assert free.splitlines()[3:] == pinned.splitlines()[3:]
    assert " ? " not in "\n".join(free.splitlines()[3:])


def test_inspect_into_a_closed_pipe(exported) -> None:
    _, path = exported("resnet", "legacy")
    cmd = f"{sys.executable} -m ovxai.cli inspect -m {path} --depth 3 | head -n 1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, check=False)
    assert proc.stdout.startswith("model ")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_ir_export_does_not_start_telemetry(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    telemetry = pytest.importorskip("openvino_telemetry")
    started: list[object] = []
    monkeypatch.setattr(telemetry, "Telemetry", lambda *a, **k: started.append(a) or pytest.fail("telemetry started"))
    from openvino.tools.ovc import convert_impl, telemetry_utils

    monkeypatch.setattr(telemetry_utils, "tm", telemetry)  # as a fresh process has it, whatever ran before
    monkeypatch.setattr(convert_impl, "tm", telemetry)
    assert main(["export", "-m", str(tiny), "-o", str(tmp_path / "p.xml")]) == 0
    assert started == []
