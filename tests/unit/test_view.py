"""The format-neutral view through both adapters: scopes, kinds, typed node fields, spatial axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.reference
import openvino as ov
import openvino.opset13 as ops
import pytest
from graphs import (
    conv_node,
    mean_plan,
    node_named,
    onnx_model,
    onnx_node,
    ov_const,
    ov_input,
    ov_named,
    random_weights,
    resnet_model,
    spatial_model,
)
from onnx import TensorProto, helper, numpy_helper

from ovxai.errors import OvxaiError
from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.graph.macs import macs, node_macs
from ovxai.graph.view import GraphView, Kind, Pooling, Slicing, Sliding, scope_from_name
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import candidates, resolve

# -- the view ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet() -> GraphView:
    """The one-block ResNet of graphs.py, read by the ONNX adapter (a fixture per module: a conftest here
    would shadow the top-level one that other tiers import from)."""
    return ONNX.view(resnet_model())


def test_scope_from_torchscript_node_names() -> None:
    assert scope_from_name("/layer4/layer4.0/relu/Relu") == "layer4.0.relu"
    assert scope_from_name("/layer4/layer4.1/conv2/Conv") == "layer4.1.conv2"
    assert scope_from_name("/features/features.0/features.0.1/Relu") == "features.0.1"
    assert scope_from_name("/fc/Gemm") == "fc"
    assert scope_from_name("/Flatten") == ""
    assert scope_from_name("Conv_12") == ""
    # a Sequential inside a module: torch.onnx names its item 'blocks.0' after the container 'blocks'
    assert scope_from_name("/stages/stages.3/blocks/blocks.0/conv1/Conv") == "stages.3.blocks.0.conv1"
    # ov.convert_model(module): the module path before the first '/'
    assert scope_from_name("__module.layer4.2.relu/aten::relu/Relu_2/fq_output_0") == "layer4.2.relu"


def test_root_level_ops_stay_at_the_root() -> None:
    """F.relu / flatten in a model's forward are named '/Relu', '/Flatten': the root, not their reader's module."""
    nodes = [
        onnx_node("Conv", ["x", "w"], ["c"], "/features/conv/Conv"),
        onnx_node("Relu", ["c"], ["r"], "/Relu"),
        onnx_node("GlobalAveragePool", ["r"], ["p"], "/GlobalAveragePool"),
        onnx_node("Flatten", ["p"], ["f"], "/Flatten"),
        onnx_node("Gemm", ["f", "fc"], ["logits"], "/classifier/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(random_weights(4, 3, 3, 3), "w"), numpy_helper.from_array(random_weights(5, 4), "fc")],
    )  # fmt: skip
    view = ONNX.view(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert {n.name: n.scope for n in view.nodes}["/Relu"] == ""
    assert resolve(view, "logits", None).tensor == "r"
    assert "classifier" not in {c.layer for c in candidates(view, "logits", None)}


def test_onnx_view_nodes_scopes_and_inputs(resnet: GraphView) -> None:
    assert [(n.op, n.scope) for n in resnet.nodes if n.name != "/Flatten"] == [
        ("Conv", "conv1"),
        ("Relu", "relu"),
        ("Conv", "layer4.0.conv1"),
        ("Relu", "layer4.0.relu"),
        ("Conv", "layer4.0.conv2"),
        ("Add", "layer4.0"),
        ("Relu", "layer4.0.relu_1"),
        ("GlobalAveragePool", "avgpool"),
        ("Gemm", "fc"),
    ]
    assert resnet.nodes[8].op == "Flatten" and resnet.nodes[8].inputs == ("pooled",)
    assert resnet.inputs == ["x"] and resnet.outputs == ["logits"]
    assert resnet.image_input() == "x"
    assert resnet.input_dims() == [1, 3, 16, 16]
    assert resnet.tensor("a5").shape == (1, 8, 8, 8) and resnet.tensor("a5").dtype == "float32"
    assert resnet.tensor("logits").shape == (1, 10)
    assert resnet.tensor("w_fc").shape == (10, 8)
    assert resnet.tensor("nowhere").shape is None
    assert resnet.producer["a4"].name == "/layer4/layer4.0/Add"
    assert [n.name for n in resnet.consumers["stem_relu"]] == ["/layer4/layer4.0/conv1/Conv", "/layer4/layer4.0/Add"]


def test_onnx_view_kinds_and_small_constant_values() -> None:
    graph = ONNX.view(resnet_model("view"))
    kind = graph.kind
    assert kind["x"] is Kind.ACTIVATION and kind["a5"] is Kind.ACTIVATION and kind["logits"] is Kind.ACTIVATION
    assert kind["w_fc"] is Kind.CONSTANT and kind["zero"] is Kind.CONSTANT
    assert [kind[t] for t in ("x_shape", "bs", "bs1", "view_shape")] == [Kind.SHAPE] * 4
    # small constants carry their values (Reshape targets, axes); weights over 64 elements do not
    np.testing.assert_array_equal(graph.values["minus_one"], [-1])
    assert graph.values["zero"].item() == 0
    np.testing.assert_array_equal(graph.values["b_fc"], random_weights(10, seed=4))
    assert "w_fc" not in graph.values and "w_a" not in graph.values  # 80 and 576 elements


def test_kinds_of_shape_of_a_constant_and_constant_node() -> None:
    nodes = [
        onnx_node("Constant", [], ["c"], "/c", value=numpy_helper.from_array(np.array([2, 3], np.int64))),
        onnx_node("Shape", ["w"], ["w_shape"], "/ws"),  # the shape of a weight is a constant
        onnx_node("Shape", ["x"], ["x_shape"], "/xs"),
        onnx_node("Concat", ["c", "w_shape", "x_shape"], ["mixed"], "/cat", axis=0),
        onnx_node("Relu", ["x"], ["y"], "/relu"),
    ]
    graph = ONNX.view(onnx_model(nodes, {"x": (1, 3, 4, 4)}, ["y"], {"w": random_weights(2, 2)}))
    assert graph.kind["c"] is Kind.CONSTANT and "c" in graph.constants
    np.testing.assert_array_equal(graph.values["c"], [2, 3])
    assert graph.kind["w_shape"] is Kind.CONSTANT
    assert graph.kind["x_shape"] is Kind.SHAPE and graph.kind["mixed"] is Kind.SHAPE
    assert graph.kind["y"] is Kind.ACTIVATION


def test_onnx_typed_node_fields() -> None:
    nodes = [
        conv_node("x", "w", "c", "/conv", pads=[1, 1, 1, 1], group=2),  # (8, 2, 3, 3): 2 groups of 4 -> 8
        onnx_node("Transpose", ["c"], ["t"], "/t", perm=[0, 2, 3, 1]),
        onnx_node("ReduceMean", ["t"], ["m"], "/m", axes=[-3, 2], keepdims=0),
        onnx_node("AveragePool", ["c"], ["whole"], "/whole", kernel_shape=[6, 6]),
        onnx_node("AveragePool", ["c"], ["padded"], "/padded", kernel_shape=[6, 6], pads=[1, 1, 1, 1]),
        onnx_node("AveragePool", ["c"], ["small"], "/small", kernel_shape=[3, 3]),
        onnx_node("AveragePool", ["c"], ["same"], "/same", kernel_shape=[6, 6], auto_pad="SAME_UPPER"),
        onnx_node("Gemm", ["m", "w_gemm"], ["g"], "/gemm"),  # (8, 5): sums over 8
        onnx_node("Gemm", ["m", "w_gemm_t"], ["gt"], "/gemm_t", transB=1),  # (5, 8)^T: sums over 8
        onnx_node("MatMul", ["m", "w_mm"], ["mm"], "/mm"),
    ]
    weights = {
        "w": random_weights(8, 2, 3, 3),
        "w_gemm": random_weights(8, 5),
        "w_gemm_t": random_weights(5, 8),
        "w_mm": random_weights(8, 7),
    }
    graph = ONNX.view(
        onnx_model(nodes, {"x": (1, 4, 6, 6)}, ["g", "gt", "mm", "whole", "padded", "small", "same"], weights)
    )
    reduce = node_named(graph, "/m")
    assert (reduce.axes, reduce.keepdims) == ((1, 2), False)
    assert node_named(graph, "/t").perm == (0, 2, 3, 1)
    assert [node_named(graph, f"/{p}").whole_window for p in ("whole", "padded", "small", "same")] == [
        True,
        False,
        False,
        False,
    ]
    assert node_named(graph, "/conv").weight_inner == (2, 3, 3)
    assert node_named(graph, "/gemm").weight_inner == (8,)
    assert node_named(graph, "/gemm_t").weight_inner == (8,)
    assert node_named(graph, "/mm").weight_inner == (8,)
    assert node_named(graph, "/t").weight_inner is None and node_named(graph, "/t").axes is None


def test_onnx_reduce_mean_axes_as_input_from_opset_18() -> None:
    nodes = [
        onnx_node("ReduceMean", ["x", "axes"], ["m"], "/m", keepdims=1),
        onnx_node("ReduceMean", ["x"], ["all"], "/all", keepdims=0),  # no axes: every axis
    ]
    graph = ONNX.view(onnx_model(nodes, {"x": (1, 4, 6, 6)}, ["m", "all"], {"axes": np.array([-1, -2])}, opset=18))
    assert (node_named(graph, "/m").axes, node_named(graph, "/m").keepdims) == ((2, 3), True)
    assert node_named(graph, "/all").axes == (0, 1, 2, 3)
    assert graph.tensor("m").shape == (1, 4, 1, 1)


def test_openvino_view_maps_op_names_to_onnx_and_fills_typed_fields() -> None:
    x = ov_input((1, 4, 6, 6))
    conv = ov_named(
        ops.convolution(x, ops.constant(random_weights(8, 4, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1]), "conv"
    )
    group = ops.group_convolution(conv, ops.constant(random_weights(2, 4, 4, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    group = ov_named(group, "group")
    shape = ov_named(ops.shape_of(group), "shape")
    whole = ov_named(ops.avg_pool(group, [1, 1], [0, 0], [0, 0], [6, 6], exclude_pad=True), "whole")
    small = ov_named(ops.avg_pool(group, [1, 1], [0, 0], [0, 0], [3, 3], exclude_pad=True), "small")
    padded = ov_named(ops.avg_pool(group, [1, 1], [1, 1], [1, 1], [6, 6], exclude_pad=False), "padded")
    t = ov_named(ops.transpose(group, ov_const([0, 2, 3, 1])), "t")
    mean = ov_named(ops.reduce_mean(t, ov_const([-3, -2]), keep_dims=False), "mean")
    mm = ov_named(ops.matmul(mean, ops.constant(random_weights(5, 8)), False, True), "mm")
    mul = ov_named(ops.multiply(mm, ops.constant(np.float32(2))), "mul")
    sub = ov_named(ops.subtract(mul, ops.constant(np.float32(1))), "sub")
    clamp = ov_named(ops.clamp(sub, 0.0, 6.0), "clamp")
    results = [ops.result(n) for n in (clamp, shape, whole, small, padded)]
    graph = OPENVINO.view(ov.Model(results, [x]))
    assert {n.name: n.op for n in graph.nodes} == {
        "conv": "Conv",
        "group": "Conv",
        "shape": "Shape",
        "whole": "AveragePool",
        "small": "AveragePool",
        "padded": "AveragePool",
        "t": "Transpose",
        "mean": "ReduceMean",
        "mm": "MatMul",
        "mul": "Mul",
        "sub": "Sub",
        "clamp": "Clip",
    }
    assert len(graph.nodes) == 12  # Parameter, Constant and Result are not operations of the view
    assert node_named(graph, "conv").weight_inner == (4, 3, 3)
    assert node_named(graph, "group").weight_inner == (4, 3, 3)  # (G, O/G, I/G, kh, kw) -> (I/G, kh, kw)
    assert node_named(graph, "mm").weight_inner == (8,)  # transpose_b: (5, 8) sums over 8
    assert [node_named(graph, p).whole_window for p in ("whole", "small", "padded")] == [True, False, False]
    assert node_named(graph, "t").perm == (0, 2, 3, 1)
    assert (node_named(graph, "mean").axes, node_named(graph, "mean").keepdims) == ((1, 2), False)
    assert graph.kind["shape"] is Kind.SHAPE and graph.kind["clamp"] is Kind.ACTIVATION
    assert graph.image_input() == "x" and graph.input_dims() == [1, 4, 6, 6]
    assert graph.tensor("group").shape == (1, 8, 6, 6) and graph.tensor("mean").shape == (1, 8)
    # small constants (the perm, the axes) are in values; the weights are not
    assert sorted(v.tolist() for v in graph.values.values() if v.dtype == np.int64) == [[-3, -2], [0, 2, 3, 1]]
    assert not any(v.size > 64 for v in graph.values.values())


def test_spatial_axes_follow_the_image() -> None:
    axes = ONNX.view(spatial_model()).spatial_axes
    assert axes["x"] == (2, 3) and axes["c"] == (2, 3) and axes["r"] == (2, 3)  # Conv, Relu carry them
    assert axes["nhwc"] == (1, 2)  # a Transpose moves them
    assert axes["r_t"] == (3, 2) and axes["nhwc_t"] == (1, 3)
    assert axes["pointwise"] == (1, 2)  # a product with weights over the channels keeps them
    assert axes["shuffled"] == (3, 4) and axes["swapped"] == (3, 4) and axes["unshuffled"] == (2, 3)
    assert axes["channel_mean"] == (2, 3)  # a reduction over channels keeps them
    assert axes["s"] == (2, 3) and axes["swish"] == (2, 3)
    for ended in ("rows", "flat", "gap", "width_mean", "attention", "projected", "mixed"):
        assert ended not in axes, ended


def test_image_input_and_input_dims() -> None:
    two = [onnx_node("Add", ["x", "y"], ["z"], "/add")]
    graph = ONNX.view(onnx_model(two, {"x": ("batch", 3, 8, 8), "y": (1, 1, 1)}, ["z"], {}))
    assert graph.image_input() == "x"  # the only 4-D input
    assert graph.input_dims() == ["batch", 3, 8, 8]
    assert graph.spatial_axes["x"] == (2, 3) and "y" not in graph.spatial_axes
    both = ONNX.view(onnx_model(two, {"x": (1, 3, 8, 8), "y": (1, 3, 8, 8)}, ["z"], {}))
    with pytest.raises(OvxaiError, match=r"expected one image input, found 2 inputs \(x, y\)"):
        both.image_input()
    assert both.spatial_axes == {}  # no image input: no axes to follow
    # a weight declared as a graph input too (old exporters) is not fed at run time
    conv = ONNX.view(
        onnx_model(
            [conv_node("x", "w", "c", "/conv")],
            {"x": (2, 3, 5, 5), "w": (4, 3, 3, 3)},
            ["c"],
            {"w": random_weights(4, 3, 3, 3)},
        )
    )
    assert conv.inputs == ["x"] and conv.input_dims() == [2, 3, 5, 5]


def _shared_onnx() -> onnx.ModelProto:
    """A model that OpenVINO's converter keeps as it is (no biases, which it splits off; no transposes, which
    it moves): the same graph in both formats. The node writing a graph output is named after it, as
    OpenVINO names it."""
    nodes = [
        conv_node("x", "w1", "c1", "/features/features.0/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Relu", ["c1"], ["r1"], "/features/features.1/Relu"),
        conv_node("r1", "w2", "c2", "/features/features.2/Conv", pads=[1, 1, 1, 1], group=2),
        onnx_node("Relu", ["c2"], ["r2"], "/features/features.3/Relu"),
        onnx_node("ReduceMean", ["r2"], ["pooled"], "/pool/ReduceMean", axes=[2, 3], keepdims=0),
        onnx_node("MatMul", ["pooled", "w_fc"], ["logits"], "logits"),
    ]
    weights = {
        "w1": random_weights(8, 3, 3, 3),
        "w2": random_weights(8, 4, 3, 3, seed=1),
        "w_fc": random_weights(8, 10, seed=2),
    }
    return onnx_model(nodes, {"x": (1, 3, 8, 8)}, ["logits"], weights)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[GraphView, GraphView]:
    """The same hand-built model seen through ONNX and through OpenVINO (converted by OpenVINO)."""
    path = tmp_path_factory.mktemp("shared") / "shared.onnx"
    model = _shared_onnx()
    onnx.save(model, str(path))
    return ONNX.view(model), OPENVINO.view(OPENVINO.convert(path))


def _facts(graph: GraphView) -> list[tuple[Any, ...]]:
    return [
        (n.name, n.op, n.scope, n.axes, n.keepdims, n.perm, n.whole_window, n.weight_inner, node_macs(graph, n))
        for n in graph.nodes
    ]


def test_same_model_through_both_adapters(shared: tuple[GraphView, GraphView]) -> None:
    onnx_view, ov_view = shared
    assert _facts(ov_view) == _facts(onnx_view)
    assert [n.op for n in ov_view.nodes] == ["Conv", "Relu", "Conv", "Relu", "ReduceMean", "MatMul"]
    assert ov_view.nodes[2].handle.get_type_name() == "GroupConvolution"
    named = ["x", "c1", "r1", "c2", "r2", "pooled", "logits"]
    assert {t: ov_view.spatial_axes.get(ov_view.aliases[t]) for t in named} == {
        t: onnx_view.spatial_axes.get(t) for t in named
    }
    assert onnx_view.spatial_axes["r2"] == (2, 3) and "pooled" not in onnx_view.spatial_axes
    assert [ov_view.kind[ov_view.aliases[t]] for t in named] == [onnx_view.kind[t] for t in named]
    assert [ov_view.tensor(ov_view.aliases[t]).shape for t in named] == [onnx_view.tensor(t).shape for t in named]
    assert ov_view.outputs == onnx_view.outputs == ["logits"]
    assert macs(ov_view, ov_view.nodes) == macs(onnx_view, onnx_view.nodes) == 8 * 64 * 27 + 8 * 64 * 4 * 9 + 10 * 8
    # and the same target, chosen automatically, named by its module, with the same tail plan
    for graph in shared:
        chosen = resolve(graph, "logits", None)
        assert (chosen.layer, chosen.shape) == ("features", (1, 8, 8, 8))
        assert graph.producer[chosen.tensor].name == "/features/features.3/Relu"
        plan = plan_tail(graph, chosen.tensor, "logits")
        assert [n.name for n in plan.nodes] == ["/pool/ReduceMean", "logits"]
        assert set(plan.side_inputs.values()) == {Kind.CONSTANT}  # weights (and OpenVINO's axes input)
        mean = mean_plan(graph, plan)
        assert mean is not None and not mean.keepdims


def test_openvino_scopes_of_a_biased_conv_match_onnx(tmp_path: Path) -> None:
    """OpenVINO's ONNX reader splits a Conv with a bias into Convolution '/conv1/Conv/WithoutBiases' + Add
    '/conv1/Conv'. The view reads the first as module 'conv1.Conv', which PyTorch never had: on the IR,
    `ovxai inspect` lists a candidate 'conv1.Conv' whose tensor is the convolution before its bias."""
    model = resnet_model()
    model.graph.node[0].input.append("b_stem")
    model.graph.initializer.append(numpy_helper.from_array(random_weights(8, seed=9), "b_stem"))
    path = tmp_path / "biased.onnx"
    onnx.save(model, str(path))
    ov_view = OPENVINO.view(OPENVINO.convert(path))
    assert [c.layer for c in candidates(ONNX.view(model), "logits")] == ["conv1", "relu", "layer4"]
    assert [c.layer for c in candidates(ov_view, "logits")] == ["conv1", "relu", "layer4"]


def _backward_facts_model() -> onnx.ModelProto:
    """One op of each kind whose backward rule reads typed facts, in ONNX's spelling of their attributes."""
    ints = {"halves": np.array([3, 5]), "starts": np.array([1]), "ends": np.array([7]), "axis": np.array([1]),
            "mean_axes": np.array([1, 2])}  # fmt: skip
    floats = {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32), "g": np.ones(8, np.float32),
              "b": np.zeros(8, np.float32), "ln_g": np.full(6, 2, np.float32)}  # fmt: skip
    floats["ln_b"] = np.zeros(6, np.float32)
    nodes = [
        onnx_node("Conv", ["x", "w"], ["c"], "/conv", group=2, strides=[2, 2], pads=[1, 0, 1, 1]),
        onnx_node("BatchNormalization", ["c", "g", "b", "b", "g"], ["bn"], "/bn", epsilon=1e-3),
        onnx_node("Clip", ["bn", "lo", "hi"], ["clipped"], "/clip"),
        onnx_node("HardSigmoid", ["clipped"], ["hs"], "/hsig", alpha=1 / 6, beta=0.5),
        onnx_node(
            "MaxPool", ["hs"], ["mp"], "/max", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1
        ),
        onnx_node("AveragePool", ["mp"], ["ap"], "/avg", kernel_shape=[2, 2], pads=[1, 1, 0, 0], count_include_pad=0),
        onnx_node("Split", ["ap", "halves"], ["s1", "s2"], "/split", axis=1),
        onnx_node("Concat", ["s2", "s1"], ["cc"], "/cat", axis=1),
        onnx_node("Slice", ["cc", "starts", "ends", "axis"], ["sl"], "/slice"),
        onnx_node("Transpose", ["sl"], ["tr"], "/nhwc", perm=[0, 2, 3, 1]),
        onnx_node("LayerNormalization", ["tr", "ln_g", "ln_b"], ["ln"], "/ln", axis=-1, epsilon=1e-5),
        onnx_node("Gelu", ["ln"], ["ge"], "/gelu", approximate="tanh"),
        onnx_node("Softmax", ["ge"], ["sm"], "/softmax", axis=-1),
        onnx_node("ReduceMean", ["sm", "mean_axes"], ["rm"], "/mean", keepdims=0),
        onnx_node("Gemm", ["rm", "w_fc"], ["logits"], "/fc", transB=1, alpha=0.5),
    ]
    weights = {"w": random_weights(8, 2, 3, 3), "w_fc": random_weights(5, 6, seed=1), **ints, **floats}
    return onnx_model(nodes, {"x": (1, 4, 16, 16)}, ["logits"], weights, opset=20)


def test_backward_facts_through_both_adapters(tmp_path: Path) -> None:
    """Each adapter reads its format's attributes into the same typed facts (OpenVINO names the ops differently,
    resolves pads itself, folds the BatchNorm and LayerNorm's affine part, and turns Gemm into MatMul)."""
    model = _backward_facts_model()
    onnx.save(model, str(tmp_path / "facts.onnx"))
    for graph in (ONNX.view(model), OPENVINO.view(OPENVINO.convert(tmp_path / "facts.onnx"))):
        by_op = {n.op: n for n in graph.nodes}
        conv = by_op["Conv"]
        assert conv.groups == 2 and conv.sliding == Sliding((3, 3), (2, 2), (1, 0), (1, 1), (1, 1))
        assert by_op["Clip"].bounds == (0.0, 6.0)
        assert (round(by_op["HardSigmoid"].alpha, 6), by_op["HardSigmoid"].beta) == (round(1 / 6, 6), 0.5)
        assert by_op["MaxPool"].pool == Pooling(Sliding((3, 3), (2, 2), (1, 1), (1, 1), (1, 1)), ceil=True)
        assert by_op["AveragePool"].pool == Pooling(Sliding((2, 2), (1, 1), (1, 1), (1, 1), (0, 0)), counts_pads=False)
        split = by_op.get("Split") or by_op["VariadicSplit"]
        assert (split.axis, split.split) == (1, (3, 5))
        assert by_op["Concat"].axis == 1 and by_op["Softmax"].axis == 3
        assert by_op["Slice"].slicing == Slicing((1,), (7,), (1,), (1,))
        assert by_op["Gelu"].approximate
        norm = by_op.get("LayerNormalization") or by_op["MeanVarianceNormalization"]
        assert norm.axes == (3,) and norm.epsilon == pytest.approx(1e-5)
        assert by_op["ReduceMean"].axes == (1, 2) and not by_op["ReduceMean"].keepdims
    assert ONNX.view(model).nodes[1].epsilon == pytest.approx(1e-3)
    gemm = next(n for n in ONNX.view(model).nodes if n.op == "Gemm")
    assert (gemm.alpha, gemm.transpose_b, gemm.transpose_a) == (0.5, True, False)
