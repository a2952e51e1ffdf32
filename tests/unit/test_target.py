"""Target resolution: --layer by tensor, node or module path; the automatic target; the prediction output."""

from __future__ import annotations

import openvino as ov
import openvino.opset13 as ops
import pytest
from graphs import (
    conv_node,
    onnx_model,
    onnx_node,
    ov_const,
    ov_input,
    ov_named,
    pooled_head,
    random_weights,
    resnet_model,
    spatial_model,
)
from onnx import helper

from ovxai.errors import OvxaiError
from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.graph.view import GraphView, Kind
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import Candidate, candidates, pick_prediction, resolve

# -- target resolution ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet() -> GraphView:
    """The one-block ResNet of graphs.py, read by the ONNX adapter (a fixture per module: a conftest here
    would shadow the top-level one that other tiers import from)."""
    return ONNX.view(resnet_model())


def test_resolve_by_tensor_node_and_module_path(resnet: GraphView) -> None:
    assert resolve(resnet, "logits", "a4") == Candidate("a4", "a4", (1, 8, 8, 8))
    assert resolve(resnet, "logits", "/layer4/layer4.0/conv2/Conv").tensor == "a3"
    assert resolve(resnet, "logits", "layer4") == Candidate("layer4", "a5", (1, 8, 8, 8))
    assert resolve(resnet, "logits", "layer4.0").tensor == "a5"
    assert resolve(resnet, "logits", "layer4.0.relu").tensor == "a2"
    assert resolve(resnet, "logits", "layer4.0.conv1").tensor == "a1"
    assert resolve(resnet, "logits", "conv1") == Candidate("conv1", "stem", (1, 8, 8, 8))
    stem = resolve(resnet, "logits", "relu")
    assert (stem.tensor, stem.chw, stem.n) == ("stem_relu", "8x8x8", 64)


def test_automatic_target_is_the_last_map_feeding_the_head(resnet: GraphView) -> None:
    assert resolve(resnet, "logits", None) == Candidate("layer4", "a5", (1, 8, 8, 8))


def test_automatic_target_prefers_a_clean_cut() -> None:
    """When the last map's tail also reads an earlier activation, the map before it is chosen."""
    nodes = [
        conv_node("x", "w_a", "a", "/a/Conv", pads=[1, 1, 1, 1]),
        conv_node("a", "w_b", "b", "/b/Conv", pads=[1, 1, 1, 1]),
        onnx_node("GlobalAveragePool", ["a"], ["pa"], "/pa/GlobalAveragePool"),
        onnx_node("GlobalAveragePool", ["b"], ["pb"], "/pb/GlobalAveragePool"),
        onnx_node("Add", ["pa", "pb"], ["p"], "/Add"),
        onnx_node("Flatten", ["p"], ["flat"], "/Flatten"),
        onnx_node("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    weights = {
        "w_a": random_weights(4, 3, 3, 3),
        "w_b": random_weights(4, 4, 3, 3, seed=1),
        "w_fc": random_weights(5, 4, seed=2),
    }
    graph = ONNX.view(onnx_model(nodes, {"x": (1, 3, 6, 6)}, ["logits"], weights))
    assert plan_tail(graph, "b", "logits").side_inputs["pa"] is Kind.ACTIVATION
    assert resolve(graph, "logits", None) == Candidate("a", "a", (1, 4, 6, 6))


def test_automatic_target_skips_an_identity_pool() -> None:
    """VGG's adaptive pool on a map of its own size: the map before it is the target."""
    pool = [
        onnx_node("AveragePool", ["map"], ["same"], "/avgpool/AveragePool", kernel_shape=[1, 1]),
        onnx_node("ReduceMean", ["same"], ["pooled"], "/pool/ReduceMean", axes=[2, 3], keepdims=0),
    ]
    graph = pooled_head(pool, features=4)
    assert graph.tensor("same").shape == graph.tensor("map").shape == (1, 4, 3, 3)
    assert resolve(graph, "logits", None) == Candidate("features", "map", (1, 4, 3, 3))


def test_channels_last_map_steps_back_to_the_nchw_map() -> None:
    nodes = [
        conv_node("x", "w", "map", "/features/Conv"),
        onnx_node("Transpose", ["map"], ["nhwc"], "/Transpose", perm=[0, 2, 3, 1]),
        onnx_node("ReduceMean", ["nhwc"], ["pooled"], "/ReduceMean", axes=[1, 2], keepdims=0),
        onnx_node("MatMul", ["pooled", "w_fc"], ["logits"], "/fc/MatMul"),
    ]
    weights = {"w": random_weights(4, 3, 3, 3), "w_fc": random_weights(4, 6)}
    onnx_view = ONNX.view(onnx_model(nodes, {"x": (1, 3, 5, 5)}, ["logits"], weights))
    assert onnx_view.spatial_axes["nhwc"] == (1, 2)
    assert resolve(onnx_view, "logits", "nhwc") == Candidate("nhwc", "map", (1, 4, 3, 3))
    assert resolve(onnx_view, "logits", None).tensor == "map"
    x = ov_input((1, 3, 5, 5))
    conv = ov_named(ops.convolution(x, ops.constant(weights["w"]), [1, 1], [0, 0], [0, 0], [1, 1]), "map")
    nhwc = ov_named(ops.transpose(conv, ov_const([0, 2, 3, 1])), "nhwc")
    pooled = ops.reduce_mean(nhwc, ov_const([1, 2]), keep_dims=False)
    logits = ov_named(ops.matmul(pooled, ops.constant(weights["w_fc"]), False, False), "logits")
    ov_view = OPENVINO.view(ov.Model([ops.result(logits)], [x]))
    assert resolve(ov_view, "logits", "nhwc") == Candidate("nhwc", "map", (1, 4, 3, 3))


def test_unknown_layer_names_the_closest(resnet: GraphView) -> None:
    with pytest.raises(OvxaiError) as error:
        resolve(resnet, "logits", "layer5")
    message = str(error.value)
    assert message.startswith("layer 'layer5' not found in the model; closest: layer4 (8x8x8)")
    assert message.endswith("(all: `ovxai inspect`)")


def test_ambiguous_layer_lists_its_maps() -> None:
    nodes = [
        conv_node("x", "w1", "left", "/branches/left/Conv"),
        conv_node("x", "w2", "right", "/branches/right/Conv"),
        onnx_node("Concat", ["left", "right"], ["both"], "/Concat", axis=1),
        onnx_node("GlobalAveragePool", ["both"], ["pooled"], "/pool/GlobalAveragePool"),
        onnx_node("Flatten", ["pooled"], ["flat"], "/Flatten"),
        onnx_node("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    weights = {
        "w1": random_weights(2, 3, 3, 3),
        "w2": random_weights(3, 3, 3, 3, seed=1),
        "w_fc": random_weights(4, 5, seed=2),
    }
    graph = ONNX.view(onnx_model(nodes, {"x": (1, 3, 6, 6)}, ["logits"], weights))
    with pytest.raises(
        OvxaiError,
        match=r"layer 'branches' is ambiguous: 2 feature maps leave it: "
        r"'left' \(1x2x4x4\), 'right' \(1x3x4x4\)",
    ):
        resolve(graph, "logits", "branches")
    assert resolve(graph, "logits", "branches.right").tensor == "right"


def test_one_by_one_map_and_non_map_are_refused(resnet: GraphView) -> None:
    with pytest.raises(OvxaiError, match=r"layer 'avgpool' gives a 1x8x1x1 map: with H x W = 1 there is one position"):
        resolve(resnet, "logits", "avgpool")
    with pytest.raises(OvxaiError, match=r"layer 'flat' gives tensor 'flat' of shape 1x8 \(float32\), not a 4-D float"):
        resolve(resnet, "logits", "flat")
    with pytest.raises(OvxaiError, match=r"layer 'fc' gives tensor 'logits' of shape 1x10"):
        resolve(resnet, "logits", "fc")
    graph = ONNX.view(spatial_model())
    with pytest.raises(OvxaiError, match=r"'attention' of shape 1x8x4x4 \(float32\), a 4-D tensor whose last two axes"):
        resolve(graph, "attention", "attention")


def test_only_one_by_one_maps_are_refused_in_one_line() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[8, 8]),  # 8x8 with an 8x8 kernel: 1 x 1
        helper.make_node("Relu", ["c"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    graph = ONNX.view(
        onnx_model(
            nodes, {"x": ["batch", 3, 8, 8]}, ["logits"], {"w": random_weights(4, 3, 8, 8), "fc": random_weights(4, 5)}
        )
    )
    with pytest.raises(OvxaiError, match=r"every feature map .* is 1 x 1 .*'relu', batchx4x1x1"):
        resolve(graph, "logits", None)


def test_pick_prediction() -> None:
    assert pick_prediction(ONNX.view(resnet_model()), None) == "logits"
    graph = ONNX.view(
        resnet_model(extra=[(onnx_node("Gemm", ["flat", "w_fc"], ["logits2"], "/fc2/Gemm", transB=1), "logits2")])
    )
    with pytest.raises(OvxaiError, match="several outputs look like class scores: logits, logits2; pick one"):
        pick_prediction(graph, None)
    assert pick_prediction(graph, "logits2") == "logits2"
    with pytest.raises(OvxaiError, match="'probs' is not an output of the model; choose one of: logits, logits2"):
        pick_prediction(graph, "probs")
    # a (B, K) output and a map output: the map is no score
    with_map = ONNX.view(resnet_model(extra=[(onnx_node("Identity", ["a5"], ["map"], "/map"), "map")]))
    assert pick_prediction(with_map, None) == "logits"
    # a conv head's (B, K, 1, 1) counts as scores
    conv_head = [conv_node("x", "w", "map", "/conv"), onnx_node("GlobalAveragePool", ["map"], ["scores"], "/gap")]
    head = ONNX.view(onnx_model(conv_head, {"x": (1, 3, 5, 5)}, ["scores"], {"w": random_weights(4, 3, 3, 3)}))
    assert head.tensor("scores").shape == (1, 4, 1, 1)
    assert pick_prediction(head, None) == "scores"


def test_pick_prediction_refuses_a_patched_model_and_a_model_without_scores() -> None:
    patched = resnet_model(extra=[(onnx_node("Identity", ["a5"], ["saliency_map"], "/saliency"), "saliency_map")])
    with pytest.raises(OvxaiError, match="already has a 'saliency_map' output; use the original model"):
        pick_prediction(ONNX.view(patched), None)
    maps_only = ONNX.view(
        onnx_model([conv_node("x", "w", "c", "/conv")], {"x": (1, 3, 5, 5)}, ["c"], {"w": random_weights(4, 3, 3, 3)})
    )
    with pytest.raises(
        OvxaiError,
        match=r"no classification output \(B, K\) computed from a 4-D feature map among "
        r"the outputs: c \(1x4x3x3\)",
    ):
        pick_prediction(maps_only, None)
    x = ov_input((1, 3, 4, 4))
    relu = ops.relu(x)
    relu.output(0).get_tensor().set_names({"relu", "saliency_map"})  # known by its other name in the view
    graph = OPENVINO.view(ov.Model([ops.result(relu)], [x]))
    assert graph.outputs == ["relu"] and graph.aliases["saliency_map"] == "relu"
    with pytest.raises(OvxaiError, match="already has a 'saliency_map' output"):
        pick_prediction(graph, None)


def test_candidates_by_depth(resnet: GraphView) -> None:
    shallow = [(c.layer, c.tensor, c.chw) for c in candidates(resnet, "logits")]
    assert shallow == [("conv1", "stem", "8x8x8"), ("relu", "stem_relu", "8x8x8"), ("layer4", "a5", "8x8x8")]
    deep = [(c.layer, c.tensor) for c in candidates(resnet, "logits", max_depth=None)]
    assert deep == [
        ("conv1", "stem"),
        ("relu", "stem_relu"),
        ("layer4.0.conv1", "a1"),
        ("layer4.0.relu", "a2"),
        ("layer4.0.conv2", "a3"),
        ("layer4", "a5"),
    ]
    assert [c.layer for c in candidates(resnet, "logits", max_depth=1)] == ["conv1", "relu", "layer4"]
