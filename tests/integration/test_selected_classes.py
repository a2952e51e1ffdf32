"""Maps for the classes that are asked, inside the graph (issue 13, part 1): ``explain="top5"`` or fixed ids
give (B, K', H, W) maps plus their class ids; each map equals the 'all' model's map of the same class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import images
from oracle import FLOAT32_FLOOR, close, reference
from runners import run

from ovxai import HookOptions, export
from ovxai.cli import main
from ovxai.exporter.pipeline import load_model
from ovxai.hook.tail import final_classifier, plan_tail
from ovxai.hook.target import resolve
from ovxai.runtime import Explainer

pytestmark = pytest.mark.slow
PHOTOS = sorted((Path(__file__).resolve().parents[2] / "samples/photos").glob("*.jpg"))


@pytest.fixture(scope="module")
def resnet(exported) -> Path:
    return exported("resnet", "legacy")[1]


@pytest.fixture(scope="module")
def resnet_net(exported):  # type: ignore[no-untyped-def]
    return exported("resnet", "legacy")[0]


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
@pytest.mark.parametrize("mask", ["onehot", "gaussian"])
def test_top_k_maps_are_the_all_maps_of_the_best_classes(
    resnet: Path, resnet_net, tmp_path: Path, suffix: str, mask: str
) -> None:
    backend = "onnxruntime" if suffix == ".onnx" else "openvino"
    everything = export(resnet, tmp_path / f"all{suffix}", options=HookOptions(mask=mask), fp16=False)
    top3 = export(resnet, tmp_path / f"top3{suffix}", options=HookOptions(mask=mask, explain="top3"), fp16=False)
    x = images(3, 128, seed=5)
    full, picked = run(everything.files[0], x, backend), run(top3.files[0], x, backend)
    assert picked["saliency_map"].shape == (3, 3, 4, 4) and picked["saliency_classes"].shape == (3, 3)
    assert picked["saliency_classes"].dtype == np.int64
    best = np.argsort(-full["logits"], axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(picked["saliency_classes"], best)
    np.testing.assert_array_equal(picked["logits"], full["logits"])
    tolerance = reference(resnet_net, "layer4", x, mask=mask).between_engines  # other products, other rounding
    for i in range(3):
        close(picked["saliency_map"][i], full["saliency_map"][i, best[i]], tolerance)


def test_fixed_class_ids_and_uint8(resnet: Path, tmp_path: Path) -> None:
    options = HookOptions(explain="7,2", saliency_dtype="uint8")
    picked = export(resnet, tmp_path / "ids.onnx", options=options)
    everything = export(resnet, tmp_path / "all.onnx", options=HookOptions(saliency_dtype="uint8"))
    x = images(2, 128)
    got, full = run(picked.files[0], x, "onnxruntime"), run(everything.files[0], x, "onnxruntime")
    np.testing.assert_array_equal(got["saliency_classes"], [[7, 2], [7, 2]])
    np.testing.assert_array_equal(got["saliency_map"], full["saliency_map"][:, [7, 2]])
    assert got["saliency_map"].nbytes == full["saliency_map"].nbytes * 2 // 10


def test_runtime_reads_either_layout(resnet: Path, tmp_path: Path) -> None:
    info = ["--mean", "0", "--scale", "255"]
    for name, explain in (("all", "all"), ("top2", "top2"), ("ids", "3,8")):
        argv = ["export", "-m", str(resnet), "-o", str(tmp_path / f"{name}.xml"), "--explain", explain, "--no-fp16"]
        assert main([*argv, *info]) == 0
    loaded = {name: Explainer.load(tmp_path / f"{name}.xml") for name in ("all", "top2", "ids")}
    reference = loaded["all"].explain(PHOTOS[:2], targets="top2")
    for result, expected in zip(loaded["top2"].explain(PHOTOS[:2], targets="top2"), reference, strict=True):
        assert [t.class_id for t in result.targets] == [t.class_id for t in expected.targets]
        close(result.maps, expected.maps, FLOAT32_FLOOR)  # the same products, the classes picked in or out of the graph
    ids = loaded["ids"].explain(PHOTOS[0], targets=[8, 3])[0]
    close(ids.maps, loaded["all"].explain(PHOTOS[0], targets=[8, 3])[0].maps, FLOAT32_FLOOR)
    with pytest.raises(Exception, match="class 5 has no map"):
        loaded["ids"].explain(PHOTOS[0], targets=[5])


@pytest.mark.parametrize(
    ("explain", "message"),
    [
        ("top0", "topK with K >= 1"),
        ("top11", "more classes than the model's 10"),
        ("3,99", "class id 99 is out of range"),
        ("cat", "not 'all', 'topK' or class ids"),
        ("3,3", "repeated"),
    ],
)
def test_bad_explain_is_one_line(resnet: Path, tmp_path: Path, capsys, explain: str, message: str) -> None:
    assert main(["export", "-m", str(resnet), "-o", str(tmp_path / "p.onnx"), "--explain", explain]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "--explain" in err
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
@pytest.mark.parametrize("score", ["logits", "sigmoid"])
def test_only_the_chosen_classes_rows_run_on_the_copies(
    resnet: Path, resnet_net, tmp_path: Path, suffix: str, score: str
) -> None:
    """With scores that need only their own logit, the copies multiply by the chosen classes' weight rows only
    (the classifier is not copied); the maps equal the unpruned model's maps of those classes."""
    import onnx

    backend = "onnxruntime" if suffix == ".onnx" else "openvino"
    source = resnet
    if suffix == ".xml":  # IR in: the classifier is OpenVINO's MatMul, then an Add of the bias
        import openvino as ov

        source = tmp_path / "plain.xml"
        ov.save_model(ov.convert_model(str(resnet)), str(source), compress_to_fp16=False)
        graph = load_model(source).graph
        plan = plan_tail(graph, resolve(graph, "logits", None).tensor, "logits")
        found = final_classifier(graph, plan.nodes, "logits")
        assert found is not None and found.bias_node and found.classes == 10
    everything = export(source, tmp_path / f"all{suffix}", options=HookOptions(score=score), fp16=False)
    for explain in ("top3", "7,2"):
        pruned = export(source, tmp_path / f"p{suffix}", options=HookOptions(score=score, explain=explain), fp16=False)
        if suffix == ".onnx":
            copied = [n.op_type for n in onnx.load(str(pruned.files[0])).graph.node if n.name.startswith("ovxai/tail/")]
            assert "Gemm" not in copied and "MatMul" not in copied, copied
        for batch in (1, 3):
            x = images(batch, 128, seed=batch)
            full, picked = run(everything.files[0], x, backend), run(pruned.files[0], x, backend)
            np.testing.assert_array_equal(picked["logits"], full["logits"])
            classes = picked["saliency_classes"]
            want = np.take_along_axis(full["saliency_map"], classes[:, :, None, None], axis=1)
            close(picked["saliency_map"], want, reference(resnet_net, "layer4", x, score=score).between_engines)
