"""``ovxai export --repository DIR``: the layout OVMS, Triton and KServe load, and a config.pbtxt that
Triton's own ModelConfig message parses."""

from __future__ import annotations

import re
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
    (repo / "kept").mkdir(parents=True)
    argv = ["export", "--model", str(onnx_path), "--layer", "nowhere", "--repository", str(repo)]
    assert "nowhere" in cli_fails(capsys, *argv, "--output", str(tmp_path / "kept.xml"), "--version", "1")
    assert [str(p.relative_to(repo)) for p in repo.rglob("*")] == ["kept"]  # no version, no scratch folder


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_repository_never_serves_other_than_what_was_exported(exported, tmp_path: Path, capsys) -> None:
    """A model's folder with versions takes a new one only by number, above all there (servers load the highest
    by default); its config.pbtxt is never overwritten by another model's; .xml then .onnx under one name never
    leave both; a refused export changes nothing."""
    _, onnx_path = exported("resnet", "legacy")
    repo = tmp_path / "models"
    argv = ["export", "--model", str(onnx_path), "--layer", "layer4", "--mean", "0", "--scale", "255"]
    xml, onnx = ["--output", str(tmp_path / "tiny.xml")], ["--output", str(tmp_path / "tiny.onnx")]
    assert main([*argv, *xml, "--repository", str(repo)]) == 0
    first = tree(repo)
    assert sorted(first) == ["tiny/1/model.bin", "tiny/1/model.xml", "tiny/config.pbtxt"]
    capsys.readouterr()

    err = cli_fails(capsys, *argv, *xml, "--repository", str(repo))
    assert "'" + str(repo / "tiny") + "' already holds version 1 of a model; add it as the next with --version 2" in err
    err = cli_fails(capsys, *argv, *onnx, "--repository", str(repo), "--version", "2")
    assert "config.pbtxt' does not describe the model just exported" in err and "nothing was added" in err
    assert tree(repo) == first  # no model.onnx beside model.xml, no 2/, the config as it was

    assert main([*argv, *xml, "--repository", str(repo), "--version", "3"]) == 0
    assert "tiny/3/model.xml" in capsys.readouterr().out
    third = tree(repo)
    assert sorted(third) == [*sorted(first)[:2], "tiny/3/model.bin", "tiny/3/model.xml", "tiny/config.pbtxt"]
    assert third["tiny/config.pbtxt"] == first["tiny/config.pbtxt"]  # the same model's config: kept as it was
    for version, message in (("2", "version 2 of '.*' is below version 3, which would be served; use --version 4"),
                             ("3", "version 3 of '.*' exists already; use --version 4"),
                             ("0", "--version 0 is not a model version")):  # fmt: skip
        assert re.search(message, cli_fails(capsys, *argv, *xml, "--repository", str(repo), "--version", version))
    edited = repo / "tiny/config.pbtxt"
    edited.write_text(edited.read_text().replace("max_batch_size: 8", "max_batch_size: 4"))
    err = cli_fails(capsys, *argv, *xml, "--repository", str(repo), "--version", "4")
    assert "line 4: 'max_batch_size: 4' there, 'max_batch_size: 8' needed" in err
    assert tree(repo) == {**third, "tiny/config.pbtxt": edited.read_bytes()}  # nothing added, nothing overwritten
    assert "--version applies to --repository only" in cli_fails(capsys, *argv, *xml, "--version", "2")


def test_a_model_folder_without_config_gets_one_with_the_new_version(exported, tmp_path: Path) -> None:
    """OVMS's layout has versions and no config.pbtxt: the new version comes with Triton's config, written new."""
    _, onnx_path = exported("resnet", "legacy")
    repo = tmp_path / "models"
    (repo / "tiny" / "1").mkdir(parents=True)
    (repo / "tiny" / "1" / "model.onnx").write_bytes(onnx_path.read_bytes())
    argv = ["export", "--model", str(onnx_path), "--layer", "layer4", "--mean", "0", "--scale", "255"]
    assert main([*argv, "--output", str(tmp_path / "tiny.onnx"), "--repository", str(repo), "--version", "2"]) == 0
    assert sorted(tree(repo)) == ["tiny/1/model.onnx", "tiny/2/model.onnx", "tiny/config.pbtxt"]
    assert parse(repo / "tiny" / "config.pbtxt").platform == "onnxruntime_onnx"
