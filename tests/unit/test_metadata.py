"""The metadata codec: labels, preprocessing and score convention, both formats."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import onnx
import onnx.reference
import openvino as ov
import openvino.opset13 as ops
import pytest
from graphs import (
    onnx_model,
    onnx_node,
    ov_input,
)
from onnx import helper

from ovxai.errors import OvxaiError
from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.metadata import ModelInfo, read_onnxruntime, read_openvino

# -- metadata ---------------------------------------------------------------------------------------

LABELS = ("tabby cat", "tiger_cat", "Egyptian cat, Mau", "crème brûlée", "  spaced  out ", "猫", "a\tb\nc", '"quoted"')
INFO = ModelInfo(
    labels=LABELS,
    mean=(123.675, 0.1, 1 / 3),
    scale=(58.395, 57.12, 1e-7),
    channel_order="rgb",
    score="sigmoid",
    probabilities=False,
)


def test_metadata_entries_round_trip_exactly() -> None:
    entries = INFO.entries()
    assert entries[("model_info", "model_type")] == "Classification"
    assert entries[("model_info", "reverse_input_channels")] == "True"
    assert entries[("model_info", "mean_values")] == "123.675 0.1 0.3333333333333333"
    assert entries[("model_info", "labels")].split() == [
        "tabby_cat",
        "tiger_cat",
        "Egyptian_cat,_Mau",
        "crème_brûlée",
        "spaced_out",
        "猫",
        "a_b_c",
        '"quoted"',
    ]
    assert (entries[("ovxai", "score")], entries[("ovxai", "probabilities")]) == ("sigmoid", "False")
    back = ModelInfo.from_entries(entries)
    assert back == INFO
    assert back.labels == LABELS and back.mean == (123.675, 0.1, 1 / 3) and back.scale[2] == 1e-7
    bgr = ModelInfo(channel_order="bgr", probabilities=True, score="logits")
    assert ModelInfo.from_entries(bgr.entries()) == bgr
    integrated = ModelInfo(method="integrated-gradcam", steps=12, score="logits")
    assert (integrated.entries()[("ovxai", "method")], integrated.entries()[("ovxai", "steps")]) == (
        "integrated-gradcam",
        "12",
    )
    assert ModelInfo.from_entries(integrated.entries()) == integrated
    assert ModelInfo.from_entries(ModelInfo().entries()) == ModelInfo()


def test_metadata_from_model_api_keys_only() -> None:
    """Metadata written by other tools: Model API's section only, labels split on whitespace."""
    entries = {
        ("model_info", "labels"): "cat dog  bird_of_prey",
        ("model_info", "mean_values"): "0 0 0",
        ("model_info", "scale_values"): "255.0",
        ("model_info", "reverse_input_channels"): "YES",
        ("model_info", "model_type"): "Classification",
    }
    info = ModelInfo.from_entries(entries)
    assert info == ModelInfo(("cat", "dog", "bird_of_prey"), (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "rgb")
    assert info.score is None and info.probabilities is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale": (1.0, 0.0, 1.0)}, "scale= 1.0 0.0 1.0 divides by zero"),
        ({"mean": (math.nan,)}, "mean= nan is not finite"),
        ({"scale": (1.0, math.inf, 1.0)}, "scale= 1.0 inf 1.0 is not finite"),
        ({"mean": (1.0, 2.0)}, "mean= takes 1 or 3 values, got 2"),
        ({"channel_order": "rbg"}, "unknown channel_order= 'rbg'; use one of: rgb, bgr"),
        ({"score": "probability"}, "unknown score= 'probability'; use one of: softmax, logits, sigmoid"),
        ({"labels": ()}, "labels= is empty"),
        ({"method": "gradcampp"}, "unknown method= 'gradcampp'; use one of: recipro, gradcam, gradcam++"),
    ],
)
def test_metadata_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(OvxaiError) as error:
        ModelInfo(**changes)
    assert str(error.value).startswith(message)


def test_metadata_one_value_serves_every_channel() -> None:
    info = ModelInfo(mean=(2,), scale=(0.5,))
    assert (info.mean, info.scale) == ((2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    assert info.entries()[("model_info", "scale_values")] == "0.5 0.5 0.5"


@pytest.fixture(scope="module")
def onnx_with_metadata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ONNX model with ``INFO`` set through the ONNX adapter, beside a property of its own."""
    model = onnx_model([onnx_node("Relu", ["x"], ["y"], "/relu")], {"x": (1, 3, 2, 2)}, ["y"], {})
    helper.set_model_props(model, {"author": "someone"})
    ONNX.set_metadata(model, INFO.entries())
    path = tmp_path_factory.mktemp("metadata") / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_metadata_keys(onnx_with_metadata: Path) -> None:
    props = {p.key: p.value for p in onnx.load(str(onnx_with_metadata)).metadata_props}
    assert props["author"] == "someone"
    assert props["model_info model_type"] == "Classification"
    assert props["model_info scale_values"] == "58.395 57.12 1e-07"
    assert props["ovxai score"] == "sigmoid"


def test_read_metadata_through_onnxruntime(onnx_with_metadata: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_with_metadata), providers=["CPUExecutionProvider"])
    assert read_onnxruntime(session) == INFO


def test_read_onnx_metadata_through_openvino(onnx_with_metadata: Path) -> None:
    assert read_openvino(ov.Core().read_model(str(onnx_with_metadata))) == INFO


def test_read_ir_metadata_through_openvino(tmp_path: Path) -> None:
    x = ov_input((1, 3, 2, 2))
    model = ov.Model([ops.result(ops.relu(x))], [x])
    OPENVINO.set_metadata(model, INFO.entries())
    xml = tmp_path / "model.xml"
    assert OPENVINO.save(model, xml, fp16=False) == [xml, tmp_path / "model.bin"]
    read = ov.Core().read_model(str(xml))
    assert read_openvino(read) == INFO
    assert read.get_rt_info(["model_info", "labels"]).astype(str) == INFO.entries()[("model_info", "labels")]
    assert read_openvino(ov.Model([ops.result(ops.relu(x))], [x])) == ModelInfo()


def test_model_api_reads_our_onnx_keys(onnx_with_metadata: Path) -> None:
    utils = pytest.importorskip("model_api.adapters.utils")
    parameters = utils.load_parameters_from_onnx(onnx.load(str(onnx_with_metadata)))
    info = parameters["model_info"]
    assert info["model_type"] == "Classification"
    assert info["labels"] == INFO.entries()[("model_info", "labels")]
    assert len(info["labels"].split()) == len(LABELS)
    assert [float(v) for v in info["mean_values"].split()] == [123.675, 0.1, 1 / 3]
    assert info["reverse_input_channels"] == "True"
    assert "ovxai" not in parameters  # ovxai's own section stays out of Model API's way
