"""``ovxai export --repository DIR``: the layout OVMS, Triton and KServe load, and a config.pbtxt that
Triton's own ModelConfig message parses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import NETS
from runners import cli_fails

from ovxai.cli import main
from ovxai.runtime import Explainer

SIZE = NETS["resnet"][1]
TYPES = pytest.importorskip("tritonclient.grpc.model_config_pb2")  # Triton's ModelConfig message


def parse(config: Path) -> Any:
    """The file parsed as Triton's ModelConfig (tritonclient ships the message)."""
    text_format = pytest.importorskip("google.protobuf.text_format")
    return text_format.Parse(config.read_text(), TYPES.ModelConfig())


@pytest.mark.parametrize("suffix", [".xml", ".onnx"])
def test_repository_layout_and_config(exported, tmp_path: Path, suffix: str, capsys) -> None:
    _, onnx_path = exported("resnet", "legacy")
    repo = tmp_path / "models"
    argv = ["export", "--model", str(onnx_path), "--layer", "layer4", "--mean", "0", "--scale", "255"]
    assert main([*argv, "--output", str(tmp_path / f"tiny_resnet{suffix}"), "--repository", str(repo)]) == 0
    model = repo / "tiny_resnet" / "1" / f"model{suffix}"
    assert model.is_file() and (suffix == ".onnx" or model.with_suffix(".bin").is_file())
    assert not (tmp_path / f"tiny_resnet{suffix}").exists()  # the repository is where it goes
    assert "config.pbtxt" in capsys.readouterr().out
    config = parse(repo / "tiny_resnet" / "config.pbtxt")
    assert config.name == "tiny_resnet" and config.max_batch_size == 8
    assert (config.backend, config.platform) == (("openvino", "") if suffix == ".xml" else ("", "onnxruntime_onnx"))
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims)) == ("input", TYPES.TYPE_FP32, [3, SIZE, SIZE])
    outputs = {o.name: list(o.dims) for o in config.output}
    assert outputs["logits"] == [10] and outputs["saliency_map"][-2:] == [4, 4]
    explainer = Explainer.load(model)  # the model in the repository is the patched one
    assert explainer.explain(np.zeros((SIZE, SIZE, 3), np.uint8))[0].maps.shape == (1, 4, 4)


def test_static_batch_repository_has_full_shapes(exported, tmp_path: Path) -> None:
    _, onnx_path = exported("resnet", "legacy")
    repo = tmp_path / "models"
    argv = ["export", "--model", str(onnx_path), "--layer", "layer4", "--static-batch", "2", "--repository", str(repo)]
    assert main([*argv, "--output", str(tmp_path / "npu.xml")]) == 0
    config = parse(repo / "npu" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 3, SIZE, SIZE]
    assert [list(o.dims)[:2] for o in config.output if o.name == "logits"] == [[2, 10]]


def test_failed_export_leaves_no_folders(exported, tmp_path: Path, capsys) -> None:
    _, onnx_path = exported("resnet", "legacy")
    repo = tmp_path / "models"
    err = cli_fails(capsys, "export", "--model", str(onnx_path), "--layer", "nowhere", "--repository", str(repo))
    assert "nowhere" in err and not repo.exists()
    (tmp_path / "file").write_text("")
    err = cli_fails(capsys, "export", "--model", str(onnx_path), "--repository", str(tmp_path / "file"))
    assert "is a file" in err
