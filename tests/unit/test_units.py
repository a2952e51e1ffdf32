"""Fast unit tests on small hand-built graphs: the view, target resolution, the tail plan, batch, cost, metadata.

No torch: graphs are written with ``onnx.helper`` (and ``openvino.opset13`` for the OpenVINO adapter),
read through :class:`ovxai.graph.view.GraphView`, and every check asserts concrete values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.reference
import openvino as ov
import openvino.opset13 as ops
import pytest
from onnx import TensorProto, helper, numpy_helper

from ovxai.errors import OvxaiError
from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.graph.batch import plan_free_batch
from ovxai.graph.macs import macs, node_macs
from ovxai.graph.view import GraphView, Kind, Node, scope_from_name
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.linear import LINEAR
from ovxai.hook.paths.mean import MEAN, MeanPlan
from ovxai.hook.paths.path import Declined
from ovxai.hook.paths.positionwise import Positionwise
from ovxai.hook.tail import TailPlan, plan_tail
from ovxai.hook.target import Candidate, candidates, pick_prediction, resolve
from ovxai.metadata import ModelInfo, read_onnxruntime, read_openvino

FLOAT = TensorProto.FLOAT

# -- building graphs --------------------------------------------------------------------------------


def _weights(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _onnx(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int | str]],
    outputs: Sequence[str],
    weights: dict[str, np.ndarray],
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked ONNX model; the outputs are declared with the types that shape inference gives them."""
    graph = helper.make_graph(
        list(nodes),
        "units",
        [helper.make_tensor_value_info(name, FLOAT, list(shape)) for name, shape in inputs.items()],
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    known = {info.name: info for info in [*inferred.value_info, *inferred.output]}
    del model.graph.output[:]
    model.graph.output.extend(known[name] for name in outputs)
    onnx.checker.check_model(model)
    return model


def _n(op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=name, **attrs)


def _conv(x: str, w: str, out: str, name: str, **attrs: Any) -> onnx.NodeProto:
    return _n("Conv", [x, w], [out], name, **attrs)


def _resnet(flatten: str = "flatten", extra: Sequence[tuple[onnx.NodeProto, str]] = ()) -> onnx.ModelProto:
    """A one-block ResNet with TorchScript-style node names: x (1,3,16,16) -> 8x8x8 maps -> 10 logits.

    ``flatten='view'`` replaces Flatten by EfficientNet's ``x.view(bs, -1)`` with ``bs`` read from the input;
    ``extra`` adds (node, output) pairs.
    """
    nodes = [
        _conv("x", "w_stem", "stem", "/conv1/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        _n("Relu", ["stem"], ["stem_relu"], "/relu/Relu"),
        _conv("stem_relu", "w_a", "a1", "/layer4/layer4.0/conv1/Conv", pads=[1, 1, 1, 1]),
        _n("Relu", ["a1"], ["a2"], "/layer4/layer4.0/relu/Relu"),
        _conv("a2", "w_b", "a3", "/layer4/layer4.0/conv2/Conv", pads=[1, 1, 1, 1]),
        _n("Add", ["a3", "stem_relu"], ["a4"], "/layer4/layer4.0/Add"),
        _n("Relu", ["a4"], ["a5"], "/layer4/layer4.0/relu_1/Relu"),
        _n("GlobalAveragePool", ["a5"], ["pooled"], "/avgpool/GlobalAveragePool"),
    ]
    if flatten == "view":
        nodes += [
            _n("Shape", ["x"], ["x_shape"], "/Shape"),
            _n("Gather", ["x_shape", "zero"], ["bs"], "/Gather", axis=0),
            _n("Unsqueeze", ["bs", "zero_axis"], ["bs1"], "/Unsqueeze"),
            _n("Concat", ["bs1", "minus_one"], ["view_shape"], "/Concat", axis=0),
            _n("Reshape", ["pooled", "view_shape"], ["flat"], "/Reshape"),
        ]
    else:
        nodes.append(_n("Flatten", ["pooled"], ["flat"], "/Flatten"))
    nodes.append(_n("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], "/fc/Gemm", transB=1))
    nodes += [node for node, _ in extra]
    weights = {
        "w_stem": _weights(8, 3, 3, 3),
        "w_a": _weights(8, 8, 3, 3, seed=1),
        "w_b": _weights(8, 8, 3, 3, seed=2),
        "w_fc": _weights(10, 8, seed=3),
        "b_fc": _weights(10, seed=4),
        "zero": np.array(0, np.int64),
        "zero_axis": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64),
    }
    if flatten != "view":
        weights = {k: v for k, v in weights.items() if k.startswith(("w_", "b_"))}
    return _onnx(nodes, {"x": (1, 3, 16, 16)}, ["logits", *(out for _, out in extra)], weights)


@pytest.fixture(scope="module")
def resnet() -> GraphView:
    return ONNX.view(_resnet())


def _pooled_head(pool: Sequence[onnx.NodeProto], features: int, opset: int = 17, **extra: np.ndarray) -> GraphView:
    """x (1,3,5,5) -> Conv -> 'map' (1,4,3,3) -> ``pool`` (reads 'map', writes 'pooled') -> Flatten -> Gemm."""
    nodes = [
        _conv("x", "w", "map", "/features/Conv"),
        *pool,
        _n("Flatten", ["pooled"], ["flat"], "/Flatten"),
        _n("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    weights = {"w": _weights(4, 3, 3, 3), "w_fc": _weights(10, features, seed=1), **extra}
    return ONNX.view(_onnx(nodes, {"x": (1, 3, 5, 5)}, ["logits"], weights, opset))


def _named(node: Any, name: str) -> Any:
    """An OpenVINO node with a friendly name and the same name on its output tensor."""
    node.set_friendly_name(name)
    node.output(0).get_tensor().set_names({name})
    return node


def _const(value: Sequence[int]) -> Any:
    return ops.constant(np.array(value, np.int64))


def _ov_input(shape: Sequence[int]) -> Any:
    return _named(ops.parameter(list(shape), np.float32), "x")


def _node(graph: GraphView, name: str) -> Node:
    return next(n for n in graph.nodes if n.name == name)


# -- the view ---------------------------------------------------------------------------------------


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
        _n("Conv", ["x", "w"], ["c"], "/features/conv/Conv"),
        _n("Relu", ["c"], ["r"], "/Relu"),
        _n("GlobalAveragePool", ["r"], ["p"], "/GlobalAveragePool"),
        _n("Flatten", ["p"], ["f"], "/Flatten"),
        _n("Gemm", ["f", "fc"], ["logits"], "/classifier/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(_weights(4, 3, 3, 3), "w"), numpy_helper.from_array(_weights(5, 4), "fc")],
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
    graph = ONNX.view(_resnet("view"))
    kind = graph.kind
    assert kind["x"] is Kind.ACTIVATION and kind["a5"] is Kind.ACTIVATION and kind["logits"] is Kind.ACTIVATION
    assert kind["w_fc"] is Kind.CONSTANT and kind["zero"] is Kind.CONSTANT
    assert [kind[t] for t in ("x_shape", "bs", "bs1", "view_shape")] == [Kind.SHAPE] * 4
    # small constants carry their values (Reshape targets, axes); weights over 64 elements do not
    np.testing.assert_array_equal(graph.values["minus_one"], [-1])
    assert graph.values["zero"].item() == 0
    np.testing.assert_array_equal(graph.values["b_fc"], _weights(10, seed=4))
    assert "w_fc" not in graph.values and "w_a" not in graph.values  # 80 and 576 elements


def test_kinds_of_shape_of_a_constant_and_constant_node() -> None:
    nodes = [
        _n("Constant", [], ["c"], "/c", value=numpy_helper.from_array(np.array([2, 3], np.int64))),
        _n("Shape", ["w"], ["w_shape"], "/ws"),  # the shape of a weight is a constant
        _n("Shape", ["x"], ["x_shape"], "/xs"),
        _n("Concat", ["c", "w_shape", "x_shape"], ["mixed"], "/cat", axis=0),
        _n("Relu", ["x"], ["y"], "/relu"),
    ]
    graph = ONNX.view(_onnx(nodes, {"x": (1, 3, 4, 4)}, ["y"], {"w": _weights(2, 2)}))
    assert graph.kind["c"] is Kind.CONSTANT and "c" in graph.constants
    np.testing.assert_array_equal(graph.values["c"], [2, 3])
    assert graph.kind["w_shape"] is Kind.CONSTANT
    assert graph.kind["x_shape"] is Kind.SHAPE and graph.kind["mixed"] is Kind.SHAPE
    assert graph.kind["y"] is Kind.ACTIVATION


def test_onnx_typed_node_fields() -> None:
    nodes = [
        _conv("x", "w", "c", "/conv", pads=[1, 1, 1, 1], group=2),  # (8, 2, 3, 3): 2 groups of 4 -> 8
        _n("Transpose", ["c"], ["t"], "/t", perm=[0, 2, 3, 1]),
        _n("ReduceMean", ["t"], ["m"], "/m", axes=[-3, 2], keepdims=0),
        _n("AveragePool", ["c"], ["whole"], "/whole", kernel_shape=[6, 6]),
        _n("AveragePool", ["c"], ["padded"], "/padded", kernel_shape=[6, 6], pads=[1, 1, 1, 1]),
        _n("AveragePool", ["c"], ["small"], "/small", kernel_shape=[3, 3]),
        _n("AveragePool", ["c"], ["same"], "/same", kernel_shape=[6, 6], auto_pad="SAME_UPPER"),
        _n("Gemm", ["m", "w_gemm"], ["g"], "/gemm"),  # (8, 5): sums over 8
        _n("Gemm", ["m", "w_gemm_t"], ["gt"], "/gemm_t", transB=1),  # (5, 8)^T: sums over 8
        _n("MatMul", ["m", "w_mm"], ["mm"], "/mm"),
    ]
    weights = {"w": _weights(8, 2, 3, 3), "w_gemm": _weights(8, 5), "w_gemm_t": _weights(5, 8), "w_mm": _weights(8, 7)}
    graph = ONNX.view(_onnx(nodes, {"x": (1, 4, 6, 6)}, ["g", "gt", "mm", "whole", "padded", "small", "same"], weights))
    reduce = _node(graph, "/m")
    assert (reduce.axes, reduce.keepdims) == ((1, 2), False)
    assert _node(graph, "/t").perm == (0, 2, 3, 1)
    assert [_node(graph, f"/{p}").whole_window for p in ("whole", "padded", "small", "same")] == [
        True,
        False,
        False,
        False,
    ]
    assert _node(graph, "/conv").weight_inner == (2, 3, 3)
    assert _node(graph, "/gemm").weight_inner == (8,)
    assert _node(graph, "/gemm_t").weight_inner == (8,)
    assert _node(graph, "/mm").weight_inner == (8,)
    assert _node(graph, "/t").weight_inner is None and _node(graph, "/t").axes is None


def test_onnx_reduce_mean_axes_as_input_from_opset_18() -> None:
    nodes = [
        _n("ReduceMean", ["x", "axes"], ["m"], "/m", keepdims=1),
        _n("ReduceMean", ["x"], ["all"], "/all", keepdims=0),  # no axes: every axis
    ]
    graph = ONNX.view(_onnx(nodes, {"x": (1, 4, 6, 6)}, ["m", "all"], {"axes": np.array([-1, -2])}, opset=18))
    assert (_node(graph, "/m").axes, _node(graph, "/m").keepdims) == ((2, 3), True)
    assert _node(graph, "/all").axes == (0, 1, 2, 3)
    assert graph.tensor("m").shape == (1, 4, 1, 1)


def test_openvino_view_maps_op_names_to_onnx_and_fills_typed_fields() -> None:
    x = _ov_input((1, 4, 6, 6))
    conv = _named(ops.convolution(x, ops.constant(_weights(8, 4, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1]), "conv")
    group = ops.group_convolution(conv, ops.constant(_weights(2, 4, 4, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    group = _named(group, "group")
    shape = _named(ops.shape_of(group), "shape")
    whole = _named(ops.avg_pool(group, [1, 1], [0, 0], [0, 0], [6, 6], exclude_pad=True), "whole")
    small = _named(ops.avg_pool(group, [1, 1], [0, 0], [0, 0], [3, 3], exclude_pad=True), "small")
    padded = _named(ops.avg_pool(group, [1, 1], [1, 1], [1, 1], [6, 6], exclude_pad=False), "padded")
    t = _named(ops.transpose(group, _const([0, 2, 3, 1])), "t")
    mean = _named(ops.reduce_mean(t, _const([-3, -2]), keep_dims=False), "mean")
    mm = _named(ops.matmul(mean, ops.constant(_weights(5, 8)), False, True), "mm")
    mul = _named(ops.multiply(mm, ops.constant(np.float32(2))), "mul")
    sub = _named(ops.subtract(mul, ops.constant(np.float32(1))), "sub")
    clamp = _named(ops.clamp(sub, 0.0, 6.0), "clamp")
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
    assert _node(graph, "conv").weight_inner == (4, 3, 3)
    assert _node(graph, "group").weight_inner == (4, 3, 3)  # (G, O/G, I/G, kh, kw) -> (I/G, kh, kw)
    assert _node(graph, "mm").weight_inner == (8,)  # transpose_b: (5, 8) sums over 8
    assert [_node(graph, p).whole_window for p in ("whole", "small", "padded")] == [True, False, False]
    assert _node(graph, "t").perm == (0, 2, 3, 1)
    assert (_node(graph, "mean").axes, _node(graph, "mean").keepdims) == ((1, 2), False)
    assert graph.kind["shape"] is Kind.SHAPE and graph.kind["clamp"] is Kind.ACTIVATION
    assert graph.image_input() == "x" and graph.input_dims() == [1, 4, 6, 6]
    assert graph.tensor("group").shape == (1, 8, 6, 6) and graph.tensor("mean").shape == (1, 8)
    # small constants (the perm, the axes) are in values; the weights are not
    assert sorted(v.tolist() for v in graph.values.values() if v.dtype == np.int64) == [[-3, -2], [0, 2, 3, 1]]
    assert not any(v.size > 64 for v in graph.values.values())


def _spatial_model() -> onnx.ModelProto:
    """One map through every kind of op that keeps, moves or ends the image's axes."""
    nodes = [
        _conv("x", "w", "c", "/conv", pads=[1, 1, 1, 1]),  # (1, 8, 4, 6)
        _n("Relu", ["c"], ["r"], "/relu"),
        _n("Transpose", ["r"], ["nhwc"], "/nhwc", perm=[0, 2, 3, 1]),  # (1, 4, 6, 8)
        _n("Reshape", ["r", "groups"], ["shuffled"], "/shuffle"),  # (1, 2, 4, 4, 6): H, W stay last
        _n("Transpose", ["shuffled"], ["swapped"], "/swap", perm=[0, 2, 1, 3, 4]),
        _n("Reshape", ["swapped", "back"], ["unshuffled"], "/unshuffle"),  # (1, 8, 4, 6)
        _n("Reshape", ["r", "tokens"], ["rows"], "/rows"),  # (1, 8, 24, 1): H, W are gone
        _n("Flatten", ["r"], ["flat"], "/flatten"),
        _n("GlobalAveragePool", ["r"], ["gap"], "/gap"),
        _n("ReduceMean", ["r"], ["channel_mean"], "/channel_mean", axes=[1], keepdims=1),
        _n("ReduceMean", ["r"], ["width_mean"], "/width_mean", axes=[3], keepdims=1),
        _n("Transpose", ["r"], ["r_t"], "/r_t", perm=[0, 1, 3, 2]),  # (1, 8, 6, 4)
        _n("MatMul", ["r", "r_t"], ["attention"], "/attention"),  # (1, 8, 4, 4): two activations
        _n("MatMul", ["r", "w_mm"], ["projected"], "/project"),  # sums over W
        _n("MatMul", ["nhwc", "w_pointwise"], ["pointwise"], "/pointwise"),  # (1, 4, 6, 5): a per-pixel Linear
        _n("Transpose", ["nhwc"], ["nhwc_t"], "/nhwc_t", perm=[0, 1, 3, 2]),  # (1, 4, 8, 6)
        _n("MatMul", ["nhwc", "nhwc_t"], ["mixed"], "/mixed"),  # (1, 4, 6, 6): two activations
        _n("Sigmoid", ["r"], ["s"], "/sigmoid"),
        _n("Mul", ["r", "s"], ["swish"], "/swish"),
    ]
    weights = {
        "w": _weights(8, 3, 3, 3),
        "groups": np.array([1, 2, 4, 4, 6]),
        "back": np.array([1, 8, 4, 6]),
        "tokens": np.array([1, 8, 24, 1]),
        "w_mm": _weights(6, 5),
        "w_pointwise": _weights(8, 5),
    }
    outputs = ["nhwc", "unshuffled", "rows", "flat", "gap", "channel_mean", "width_mean", "attention"]
    return _onnx(nodes, {"x": (1, 3, 4, 6)}, [*outputs, "projected", "pointwise", "mixed", "swish"], weights)


def test_spatial_axes_follow_the_image() -> None:
    axes = ONNX.view(_spatial_model()).spatial_axes
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
    two = [_n("Add", ["x", "y"], ["z"], "/add")]
    graph = ONNX.view(_onnx(two, {"x": ("batch", 3, 8, 8), "y": (1, 1, 1)}, ["z"], {}))
    assert graph.image_input() == "x"  # the only 4-D input
    assert graph.input_dims() == ["batch", 3, 8, 8]
    assert graph.spatial_axes["x"] == (2, 3) and "y" not in graph.spatial_axes
    both = ONNX.view(_onnx(two, {"x": (1, 3, 8, 8), "y": (1, 3, 8, 8)}, ["z"], {}))
    with pytest.raises(OvxaiError, match=r"expected one image input, found 2 inputs \(x, y\)"):
        both.image_input()
    assert both.spatial_axes == {}  # no image input: no axes to follow
    # a weight declared as a graph input too (old exporters) is not fed at run time
    conv = ONNX.view(
        _onnx(
            [_conv("x", "w", "c", "/conv")], {"x": (2, 3, 5, 5), "w": (4, 3, 3, 3)}, ["c"], {"w": _weights(4, 3, 3, 3)}
        )
    )
    assert conv.inputs == ["x"] and conv.input_dims() == [2, 3, 5, 5]


def _shared_onnx() -> onnx.ModelProto:
    """A model that OpenVINO's converter keeps as it is (no biases, which it splits off; no transposes, which
    it moves): the same graph in both formats. The node writing a graph output is named after it, as
    OpenVINO names it."""
    nodes = [
        _conv("x", "w1", "c1", "/features/features.0/Conv", pads=[1, 1, 1, 1]),
        _n("Relu", ["c1"], ["r1"], "/features/features.1/Relu"),
        _conv("r1", "w2", "c2", "/features/features.2/Conv", pads=[1, 1, 1, 1], group=2),
        _n("Relu", ["c2"], ["r2"], "/features/features.3/Relu"),
        _n("ReduceMean", ["r2"], ["pooled"], "/pool/ReduceMean", axes=[2, 3], keepdims=0),
        _n("MatMul", ["pooled", "w_fc"], ["logits"], "logits"),
    ]
    weights = {"w1": _weights(8, 3, 3, 3), "w2": _weights(8, 4, 3, 3, seed=1), "w_fc": _weights(8, 10, seed=2)}
    return _onnx(nodes, {"x": (1, 3, 8, 8)}, ["logits"], weights)


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
        mean = _mean(graph, plan)
        assert mean is not None and not mean.keepdims


def test_openvino_scopes_of_a_biased_conv_match_onnx(tmp_path: Path) -> None:
    """OpenVINO's ONNX reader splits a Conv with a bias into Convolution '/conv1/Conv/WithoutBiases' + Add
    '/conv1/Conv'. The view reads the first as module 'conv1.Conv', which PyTorch never had: on the IR,
    `ovxai inspect` lists a candidate 'conv1.Conv' whose tensor is the convolution before its bias."""
    model = _resnet()
    model.graph.node[0].input.append("b_stem")
    model.graph.initializer.append(numpy_helper.from_array(_weights(8, seed=9), "b_stem"))
    path = tmp_path / "biased.onnx"
    onnx.save(model, str(path))
    ov_view = OPENVINO.view(OPENVINO.convert(path))
    assert [c.layer for c in candidates(ONNX.view(model), "logits")] == ["conv1", "relu", "layer4"]
    assert [c.layer for c in candidates(ov_view, "logits")] == ["conv1", "relu", "layer4"]


# -- target resolution ------------------------------------------------------------------------------


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
        _conv("x", "w_a", "a", "/a/Conv", pads=[1, 1, 1, 1]),
        _conv("a", "w_b", "b", "/b/Conv", pads=[1, 1, 1, 1]),
        _n("GlobalAveragePool", ["a"], ["pa"], "/pa/GlobalAveragePool"),
        _n("GlobalAveragePool", ["b"], ["pb"], "/pb/GlobalAveragePool"),
        _n("Add", ["pa", "pb"], ["p"], "/Add"),
        _n("Flatten", ["p"], ["flat"], "/Flatten"),
        _n("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    weights = {"w_a": _weights(4, 3, 3, 3), "w_b": _weights(4, 4, 3, 3, seed=1), "w_fc": _weights(5, 4, seed=2)}
    graph = ONNX.view(_onnx(nodes, {"x": (1, 3, 6, 6)}, ["logits"], weights))
    assert plan_tail(graph, "b", "logits").side_inputs["pa"] is Kind.ACTIVATION
    assert resolve(graph, "logits", None) == Candidate("a", "a", (1, 4, 6, 6))


def test_automatic_target_skips_an_identity_pool() -> None:
    """VGG's adaptive pool on a map of its own size: the map before it is the target."""
    pool = [
        _n("AveragePool", ["map"], ["same"], "/avgpool/AveragePool", kernel_shape=[1, 1]),
        _n("ReduceMean", ["same"], ["pooled"], "/pool/ReduceMean", axes=[2, 3], keepdims=0),
    ]
    graph = _pooled_head(pool, features=4)
    assert graph.tensor("same").shape == graph.tensor("map").shape == (1, 4, 3, 3)
    assert resolve(graph, "logits", None) == Candidate("features", "map", (1, 4, 3, 3))


def test_channels_last_map_steps_back_to_the_nchw_map() -> None:
    nodes = [
        _conv("x", "w", "map", "/features/Conv"),
        _n("Transpose", ["map"], ["nhwc"], "/Transpose", perm=[0, 2, 3, 1]),
        _n("ReduceMean", ["nhwc"], ["pooled"], "/ReduceMean", axes=[1, 2], keepdims=0),
        _n("MatMul", ["pooled", "w_fc"], ["logits"], "/fc/MatMul"),
    ]
    weights = {"w": _weights(4, 3, 3, 3), "w_fc": _weights(4, 6)}
    onnx_view = ONNX.view(_onnx(nodes, {"x": (1, 3, 5, 5)}, ["logits"], weights))
    assert onnx_view.spatial_axes["nhwc"] == (1, 2)
    assert resolve(onnx_view, "logits", "nhwc") == Candidate("nhwc", "map", (1, 4, 3, 3))
    assert resolve(onnx_view, "logits", None).tensor == "map"
    x = _ov_input((1, 3, 5, 5))
    conv = _named(ops.convolution(x, ops.constant(weights["w"]), [1, 1], [0, 0], [0, 0], [1, 1]), "map")
    nhwc = _named(ops.transpose(conv, _const([0, 2, 3, 1])), "nhwc")
    pooled = ops.reduce_mean(nhwc, _const([1, 2]), keep_dims=False)
    logits = _named(ops.matmul(pooled, ops.constant(weights["w_fc"]), False, False), "logits")
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
        _conv("x", "w1", "left", "/branches/left/Conv"),
        _conv("x", "w2", "right", "/branches/right/Conv"),
        _n("Concat", ["left", "right"], ["both"], "/Concat", axis=1),
        _n("GlobalAveragePool", ["both"], ["pooled"], "/pool/GlobalAveragePool"),
        _n("Flatten", ["pooled"], ["flat"], "/Flatten"),
        _n("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    weights = {"w1": _weights(2, 3, 3, 3), "w2": _weights(3, 3, 3, 3, seed=1), "w_fc": _weights(4, 5, seed=2)}
    graph = ONNX.view(_onnx(nodes, {"x": (1, 3, 6, 6)}, ["logits"], weights))
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
    graph = ONNX.view(_spatial_model())
    with pytest.raises(OvxaiError, match=r"'attention' of shape 1x8x4x4 \(float32\), a 4-D tensor whose last two axes"):
        resolve(graph, "attention", "attention")


def test_pick_prediction() -> None:
    assert pick_prediction(ONNX.view(_resnet()), None) == "logits"
    graph = ONNX.view(_resnet(extra=[(_n("Gemm", ["flat", "w_fc"], ["logits2"], "/fc2/Gemm", transB=1), "logits2")]))
    with pytest.raises(OvxaiError, match="several outputs look like class scores: logits, logits2; pick one"):
        pick_prediction(graph, None)
    assert pick_prediction(graph, "logits2") == "logits2"
    with pytest.raises(OvxaiError, match="'probs' is not an output of the model; choose one of: logits, logits2"):
        pick_prediction(graph, "probs")
    # a (B, K) output and a map output: the map is no score
    with_map = ONNX.view(_resnet(extra=[(_n("Identity", ["a5"], ["map"], "/map"), "map")]))
    assert pick_prediction(with_map, None) == "logits"
    # a conv head's (B, K, 1, 1) counts as scores
    conv_head = [_conv("x", "w", "map", "/conv"), _n("GlobalAveragePool", ["map"], ["scores"], "/gap")]
    head = ONNX.view(_onnx(conv_head, {"x": (1, 3, 5, 5)}, ["scores"], {"w": _weights(4, 3, 3, 3)}))
    assert head.tensor("scores").shape == (1, 4, 1, 1)
    assert pick_prediction(head, None) == "scores"


def test_pick_prediction_refuses_a_patched_model_and_a_model_without_scores() -> None:
    patched = _resnet(extra=[(_n("Identity", ["a5"], ["saliency_map"], "/saliency"), "saliency_map")])
    with pytest.raises(OvxaiError, match="already has a 'saliency_map' output; use the original model"):
        pick_prediction(ONNX.view(patched), None)
    maps_only = ONNX.view(
        _onnx([_conv("x", "w", "c", "/conv")], {"x": (1, 3, 5, 5)}, ["c"], {"w": _weights(4, 3, 3, 3)})
    )
    with pytest.raises(
        OvxaiError,
        match=r"no classification output \(B, K\) computed from a 4-D feature map among "
        r"the outputs: c \(1x4x3x3\)",
    ):
        pick_prediction(maps_only, None)
    x = _ov_input((1, 3, 4, 4))
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


# -- the tail plan ----------------------------------------------------------------------------------


def _mean(graph: GraphView, tail: TailPlan) -> MeanPlan | None:
    """The global-pool path's plan, None where it declines."""
    plan = MEAN.plan(graph, tail, HookOptions())
    return None if isinstance(plan, Declined) else plan


def test_tail_plan_nodes_and_side_inputs() -> None:
    graph = ONNX.view(_resnet("view"))
    inside = plan_tail(graph, "a3", "logits")  # inside the residual block
    assert [n.name for n in inside.nodes] == [
        "/layer4/layer4.0/Add",
        "/layer4/layer4.0/relu_1/Relu",
        "/avgpool/GlobalAveragePool",
        "/Reshape",
        "/fc/Gemm",
    ]
    assert inside.side_inputs == {
        "stem_relu": Kind.ACTIVATION,  # the skip connection
        "view_shape": Kind.SHAPE,  # x.view(bs, -1) with bs read from the input
        "w_fc": Kind.CONSTANT,
        "b_fc": Kind.CONSTANT,
    }
    assert _mean(graph, inside) is None  # T's first reader is the Add
    assert isinstance(LINEAR.plan(graph, inside, HookOptions()), Declined)
    after = plan_tail(graph, "a5", "logits")
    assert [n.op for n in after.nodes] == ["GlobalAveragePool", "Reshape", "Gemm"]
    assert after.side_inputs == {"view_shape": Kind.SHAPE, "w_fc": Kind.CONSTANT, "b_fc": Kind.CONSTANT}
    assert _mean(graph, after) == MeanPlan(Positionwise((), "a5", _node(graph, "/avgpool/GlobalAveragePool")), True)
    assert (after.target, after.prediction) == ("a5", "logits")


def test_tail_plan_refuses_a_target_that_does_not_feed_the_prediction() -> None:
    graph = ONNX.view(_resnet(extra=[(_n("Relu", ["stem"], ["side"], "/side"), "side")]))
    with pytest.raises(OvxaiError, match="target tensor 'side' does not feed the prediction output 'logits'; pick"):
        plan_tail(graph, "side", "logits")


POOLS = {
    "global-average-pool": ([_n("GlobalAveragePool", ["map"], ["pooled"], "/pool")], 4, 17, True),
    "reduce-mean-2-3": ([_n("ReduceMean", ["map"], ["pooled"], "/pool", axes=[2, 3], keepdims=0)], 4, 17, False),
    "reduce-mean-input-axes": ([_n("ReduceMean", ["map", "axes"], ["pooled"], "/pool", keepdims=1)], 4, 18, True),
    "average-pool-whole": ([_n("AveragePool", ["map"], ["pooled"], "/pool", kernel_shape=[3, 3])], 4, 17, True),
    "average-pool-2x2": ([_n("AveragePool", ["map"], ["pooled"], "/pool", kernel_shape=[2, 2])], 16, 17, None),
    "average-pool-padded": (
        [_n("AveragePool", ["map"], ["pooled"], "/pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        36,
        17,
        None,
    ),
    "reduce-mean-channels": ([_n("ReduceMean", ["map"], ["pooled"], "/pool", axes=[1], keepdims=1)], 9, 17, None),
    "reduce-mean-1-2-3": ([_n("ReduceMean", ["map"], ["pooled"], "/pool", axes=[1, 2, 3], keepdims=1)], 1, 17, None),
    "global-max-pool": ([_n("GlobalMaxPool", ["map"], ["pooled"], "/pool")], 4, 17, None),
}


@pytest.mark.parametrize("pool", POOLS, ids=list(POOLS))
def test_fast_path_is_a_global_average_pool_over_h_and_w(pool: str) -> None:
    nodes, features, opset, keepdims = POOLS[pool]
    graph = _pooled_head(nodes, features, opset, axes=np.array([2, -1]))
    plan = plan_tail(graph, "map", "logits")
    assert [n.name for n in plan.nodes] == ["/pool", "/Flatten", "/fc/Gemm"]
    expected = None if keepdims is None else MeanPlan(Positionwise((), "map", _node(graph, "/pool")), keepdims)
    assert _mean(graph, plan) == expected


def test_fast_path_needs_the_pool_to_be_the_only_reader() -> None:
    pool = [
        _n("GlobalAveragePool", ["map"], ["gap"], "/pool"),
        _n("Shape", ["map"], ["map_shape"], "/shape"),  # reading only T's shape is fine
        _n("Slice", ["map_shape", "zero", "one"], ["batch"], "/batch"),
        _n("Concat", ["batch", "minus_one"], ["target"], "/target", axis=0),
        _n("Reshape", ["gap", "target"], ["pooled"], "/view"),
    ]
    ints = {"zero": np.array([0]), "one": np.array([1]), "minus_one": np.array([-1])}
    graph = _pooled_head(pool, 4, **ints)
    plan = plan_tail(graph, "map", "logits")
    assert _mean(graph, plan) == MeanPlan(Positionwise((), "map", _node(graph, "/pool")), True)
    assert plan.side_inputs["zero"] is Kind.CONSTANT and "map_shape" not in plan.side_inputs
    skip = [
        _n("GlobalAveragePool", ["map"], ["gap"], "/pool"),
        _n("ReduceMax", ["map"], ["peak"], "/peak", axes=[2, 3], keepdims=1),
        _n("Add", ["gap", "peak"], ["pooled"], "/add"),
    ]
    skipped = _pooled_head(skip, 4)
    assert _mean(skipped, plan_tail(skipped, "map", "logits")) is None


def test_fast_path_through_openvino() -> None:
    def head(pool: Any) -> GraphView:
        x = _ov_input((1, 3, 5, 5))
        conv = _named(ops.convolution(x, ops.constant(_weights(4, 3, 3, 3)), [1, 1], [0, 0], [0, 0], [1, 1]), "map")
        pooled = _named(pool(conv), "pooled")
        flat = _named(ops.reshape(pooled, _const([0, -1]), special_zero=True), "flat")
        features = flat.get_output_partial_shape(0)[1].get_length()
        logits = _named(ops.matmul(flat, ops.constant(_weights(features, 10)), False, False), "logits")
        return OPENVINO.view(ov.Model([ops.result(logits)], [x]))

    def keepdims(pool: Any) -> bool | None:
        graph = head(pool)
        plan = plan_tail(graph, "map", "logits")
        assert [n.name for n in plan.nodes] == ["pooled", "flat", "logits"]
        mean = _mean(graph, plan)
        return None if mean is None else mean.keepdims

    assert keepdims(lambda m: ops.reduce_mean(m, _const([2, 3]), keep_dims=False)) is False
    assert keepdims(lambda m: ops.reduce_mean(m, _const([-1, -2]), keep_dims=True)) is True
    assert keepdims(lambda m: ops.avg_pool(m, [1, 1], [0, 0], [0, 0], [3, 3], exclude_pad=True)) is True
    assert keepdims(lambda m: ops.avg_pool(m, [1, 1], [0, 0], [0, 0], [2, 2], exclude_pad=True)) is None
    assert keepdims(lambda m: ops.reduce_mean(m, _const([1]), keep_dims=True)) is None
    assert keepdims(lambda m: ops.reduce_max(m, _const([2, 3]), keep_dims=True)) is None


# -- batch ------------------------------------------------------------------------------------------


def _reshaped(
    target: Sequence[int], batch: int | str = 1, transpose: bool = False, features: int = 32
) -> onnx.ModelProto:
    """x (batch,3,4,4) -> Conv -> (batch,2,4,4) [-> Transpose to (2,batch,4,4)] -> Reshape(target) -> MatMul."""
    nodes = [_conv("x", "w", "map", "/conv", pads=[1, 1, 1, 1])]
    if transpose:
        nodes.append(_n("Transpose", ["map"], ["moved"], "/move", perm=[1, 0, 2, 3]))
    nodes += [
        _n("Reshape", ["moved" if transpose else "map", "target"], ["flat"], "/view"),
        _n("MatMul", ["flat", "w_fc"], ["logits"], "/fc"),
    ]
    weights = {"w": _weights(2, 3, 3, 3), "target": np.array(target, np.int64), "w_fc": _weights(features, 5)}
    return _onnx(nodes, {"x": (batch, 3, 4, 4)}, ["logits"], weights)


def test_free_batch_rewrites_a_baked_batch() -> None:
    model = _reshaped([1, -1])
    graph = ONNX.view(model)
    (fix,) = plan_free_batch(graph)
    assert fix.node.name == "/view"
    assert fix.target.tolist() == [0, -1] and fix.target.dtype == np.int64
    assert graph.values["target"].tolist() == [1, -1]  # the plan does not touch the model
    # applied, the model runs on any batch
    ONNX.rewrite_reshapes(model, [fix])
    ONNX.set_input_shape(model, "x", ["batch", 3, 4, 4])
    x = np.random.default_rng(0).random((3, 3, 4, 4), dtype=np.float32)
    (logits,) = onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})
    assert logits.shape == (3, 5)
    assert ONNX.view(model).input_dims() == ["batch", 3, 4, 4]


def test_free_batch_of_another_fixed_batch_and_through_openvino() -> None:
    (fix,) = plan_free_batch(ONNX.view(_reshaped([2, 32], batch=2)))
    assert fix.target.tolist() == [0, 32]
    x = _ov_input((2, 8))
    view = _named(ops.reshape(x, _const([2, 2, 4]), special_zero=False), "view")
    (ov_fix,) = plan_free_batch(OPENVINO.view(ov.Model([ops.result(view)], [x])))
    assert (ov_fix.node.name, ov_fix.target.tolist()) == ("view", [0, 2, 4])


def test_free_batch_leaves_other_reshapes_alone() -> None:
    assert plan_free_batch(ONNX.view(_reshaped([1, -1], transpose=True))) == []  # data starts with 2, not B
    assert plan_free_batch(ONNX.view(_reshaped([1, -1], batch="N"))) == []  # the batch is already free
    assert plan_free_batch(ONNX.view(_reshaped([-1, 32]))) == []  # nothing baked


def test_free_batch_refuses_a_target_with_another_zero() -> None:
    with pytest.raises(OvxaiError, match="the batch size is fixed to 1 in node '/view'; re-export the model with a"):
        plan_free_batch(ONNX.view(_reshaped([1, 0, -1], features=16)))


# -- cost -------------------------------------------------------------------------------------------


def _cost_model() -> onnx.ModelProto:
    """x (2,6,8,8): Conv 6->6 3x3 pad 1, grouped Conv (3 groups) 3x3, GAP, Gemm transB 6->5, MatMul 5->7."""
    nodes = [
        _conv("x", "w_conv", "c", "/conv", pads=[1, 1, 1, 1]),
        _conv("c", "w_group", "g", "/group", group=3),
        _n("GlobalAveragePool", ["g"], ["p"], "/gap"),
        _n("Flatten", ["p"], ["f"], "/flatten"),
        _n("Gemm", ["f", "w_gemm"], ["gemm"], "/gemm", transB=1),
        _n("MatMul", ["gemm", "w_mm"], ["logits"], "/mm"),
    ]
    weights = {
        "w_conv": _weights(6, 6, 3, 3),
        "w_group": _weights(6, 2, 3, 3),
        "w_gemm": _weights(5, 6),
        "w_mm": _weights(5, 7),
    }
    return _onnx(nodes, {"x": (2, 6, 8, 8)}, ["logits"], weights)


COSTS = {"/conv": 6 * 8 * 8 * 6 * 3 * 3, "/group": 6 * 6 * 6 * 2 * 3 * 3, "/gemm": 5 * 6, "/mm": 7 * 5}


def test_macs_through_onnx() -> None:
    graph = ONNX.view(_cost_model())
    assert {n.name: node_macs(graph, n) for n in graph.nodes} == {**COSTS, "/gap": 0, "/flatten": 0}
    assert macs(graph, graph.nodes) == 20736 + 3888 + 30 + 35
    assert macs(graph, plan_tail(graph, "g", "logits").nodes) == 65  # per image: the batch of 2 is not counted


def test_macs_through_openvino(tmp_path: Path) -> None:
    path = tmp_path / "cost.onnx"
    onnx.save(_cost_model(), str(path))
    graph = OPENVINO.view(OPENVINO.convert(path))
    costly = [(n.op, n.handle.get_type_name(), node_macs(graph, n)) for n in graph.nodes if node_macs(graph, n)]
    assert costly == [
        ("Conv", "Convolution", COSTS["/conv"]),
        ("Conv", "GroupConvolution", COSTS["/group"]),
        ("MatMul", "MatMul", COSTS["/gemm"]),  # Gemm becomes MatMul
        ("MatMul", "MatMul", COSTS["/mm"]),
    ]
    assert graph.tensor(_node(graph, "/group").inputs[1]).shape == (3, 2, 2, 3, 3)  # OpenVINO's grouped layout
    assert macs(graph, graph.nodes) == sum(COSTS.values())


def test_macs_of_unknown_shapes_and_other_ops_are_zero() -> None:
    nodes = [_conv("x", "w", "c", "/conv"), _n("Relu", ["c"], ["r"], "/relu")]
    graph = ONNX.view(_onnx(nodes, {"x": ("N", 3, "H", "W")}, ["r"], {"w": _weights(4, 3, 3, 3)}))
    shape = graph.tensor("c").shape
    assert shape is not None and shape[:2] == ("N", 4) and not any(isinstance(d, int) for d in shape[2:])
    assert [node_macs(graph, n) for n in graph.nodes] == [0, 0]


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
    model = _onnx([_n("Relu", ["x"], ["y"], "/relu")], {"x": (1, 3, 2, 2)}, ["y"], {})
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
    x = _ov_input((1, 3, 2, 2))
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
