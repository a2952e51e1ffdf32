"""OpenVINO's own Model API loads the patched IR as a classifier and returns *our* saliency map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from conftest import NETS
from runners import run

from ovxai.cli import main

model_api = pytest.importorskip("model_api.models")
pytestmark = pytest.mark.slow  # end to end: torch export, then OpenVINO Model API on the IR


def test_model_api_create_model_returns_our_saliency(exported, tmp_path: Path) -> None:
    _, onnx_path = exported("resnet", "legacy")
    labels = [f"class {i}, number {i}" for i in range(10)]  # spaces and commas, like ImageNet's names
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    xml = tmp_path / "patched.xml"
    argv = ["export", "-m", str(onnx_path), "-o", str(xml), "--layer", "layer4", "--no-fp16"]
    argv += [
        "--labels",
        str(tmp_path / "labels.txt"),
        "--mean",
        "120,110,100",
        "--scale",
        "60",
        "--channel-order",
        "rgb",
    ]
    assert main(argv) == 0

    rt = ov.Core().read_model(str(xml)).get_rt_info()
    assert rt["model_info"]["model_type"].astype(str) == "Classification"
    assert json.loads(rt["ovxai"]["labels"].astype(str)) == labels

    size = NETS["resnet"][1]
    bgr = np.random.default_rng(3).integers(0, 256, (size, size, 3), dtype=np.uint8)  # model size: no resize
    wrapper = model_api.Model.create_model(str(xml), device="CPU", configuration={"topk": 3})
    result = wrapper(bgr)
    saliency = np.array(result.saliency_map, copy=True)

    # The same image through the IR directly, preprocessed as the metadata says.
    x = ((bgr[..., ::-1].astype(np.float32) - [120, 110, 100]) / 60).transpose(2, 0, 1)[None].astype(np.float32)
    direct = run(xml, x, "openvino", exact=False)  # Model API compiles with the default precision too
    assert saliency.shape == direct["saliency_map"].shape == (1, 10, 4, 4)
    assert result.top_labels[0].id == int(direct["logits"][0].argmax())
    assert result.top_labels[0].name == "_".join(labels[int(direct["logits"][0].argmax())].split())
    assert np.abs(saliency - direct["saliency_map"]).max() < 2e-2  # Model API may infer in bf16 on this CPU
    np.testing.assert_allclose(
        np.asarray(result.feature_vector).ravel(), direct["feature_vector"][0], rtol=2e-2, atol=2e-2
    )


def test_labels_must_match_the_classes(exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, onnx_path = exported("resnet", "legacy")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    argv = ["export", "-m", str(onnx_path), "-o", str(tmp_path / "p.xml"), "--labels", str(tmp_path / "labels.txt")]
    assert main(argv) == 2
    assert "2 names but the model predicts 10 classes" in capsys.readouterr().err
    assert not (tmp_path / "p.xml").exists()


def test_onnx_output_carries_the_same_metadata(exported, tmp_path: Path) -> None:
    import onnx

    _, onnx_path = exported("resnet", "legacy")
    (tmp_path / "labels.txt").write_text("\n".join(f"tabby {i}" for i in range(10)))
    out = tmp_path / "p.onnx"
    argv = ["export", "-m", str(onnx_path), "-o", str(out), "--labels", str(tmp_path / "labels.txt"), "--mean", "127"]
    assert main(argv) == 0
    from model_api.adapters.utils import load_parameters_from_onnx

    proto = onnx.load(str(out))
    parsed = load_parameters_from_onnx(proto)["model_info"]  # Model API's own reader of ONNX metadata
    assert parsed["model_type"] == "Classification"
    assert [float(v) for v in parsed["mean_values"].split()] == [127.0] * 3
    assert parsed["labels"].split()[3] == "tabby_3"
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["ovxai labels"])[3] == "tabby 3"
