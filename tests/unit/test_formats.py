"""The format adapters' static facts (issue 19): the shape arithmetic that the model's fixed dimensions determine is
folded into constants whatever tool wrote it (OpenVINO's ``read_model`` spelling, ONNX paddings computed from each
map's size), never what depends on the batch; pools are recognised by what they compute.

Small hand-built graphs, no torch; every check asserts concrete values.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from graphs import mean_plan, onnx_model, ov_const, random_weights
from onnx import helper
from openvino import opset8

from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.graph.view import GraphView
from ovxai.hook.options import HookOptions
from ovxai.hook.paths import CNN_PATHS, choose
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import pick_prediction, resolve


def _path(graph: GraphView, target: str, prediction: str) -> str:
    return choose(CNN_PATHS, graph, plan_tail(graph, target, prediction), HookOptions()).name


def _read_model_style(batch: int | None = None) -> ov.Model:
    """A conv classifier as OpenVINO's ONNX frontend writes it under ``read_model``: the bias reshaped to the
    rank of the convolution's output, the pool's axes counted as Range(2, rank), plus a batch-dependent flatten."""
    x = ops.parameter([-1 if batch is None else batch, 3, 8, 8], np.float32, name="x")
    conv = ops.convolution(x, ops.constant(random_weights(4, 3, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    rank = ops.shape_of(ops.shape_of(conv))  # [4]
    ones = ops.broadcast(ov_const([1]), ops.subtract(rank, ov_const([2])))  # [1, 1]
    bias_shape = ops.concat([ov_const([1, 4]), ones], 0)  # [1, 4, 1, 1], from the output's rank only
    bias = ops.reshape(ops.constant(random_weights(4, seed=1)), bias_shape, False)
    relu = ops.relu(ops.add(conv, bias))
    relu.set_friendly_name("relu")
    axes = opset8.range(ops.constant(np.int64(2)), ops.squeeze(rank, ov_const([0])), ops.constant(np.int64(1)), "i64")
    pool = ops.reduce_mean(relu, axes, keep_dims=True)
    batch_size = ops.gather(ops.shape_of(x), ov_const([0]), ops.constant(np.int64(0)))  # depends on the batch
    flat = ops.reshape(pool, ops.concat([batch_size, ov_const([-1])], 0), False)
    product = ops.matmul(flat, ops.constant(random_weights(4, 5, seed=2)), False, False)
    per_image = ops.convert(ops.divide(batch_size, batch_size), np.float32)  # 1, computed from the batch
    logits = ops.multiply(product, per_image)
    logits.output(0).get_tensor().set_names({"logits"})
    return ov.Model([ops.result(logits)], [x])


def test_openvino_folds_what_the_fixed_dimensions_determine() -> None:
    model = _read_model_style()
    before = OPENVINO.view(model)
    pool = next(n for n in before.nodes if n.op == "ReduceMean")
    assert pool.axes == (2, 3)  # the view already evaluates them on its private clone
    OPENVINO.fold_static_shapes(model)
    graph = OPENVINO.view(model)
    assert [n.op for n in graph.nodes].count("Shape") == 1  # the batch's ShapeOf(x) is left, for the Multiply
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    # OpenVINO rewrites the flatten's batch-dependent target as one valid for any batch
    assert graph.values[reshape.inputs[1]].tolist() == [-1, 4]
    prediction = pick_prediction(graph, None)
    target = resolve(graph, prediction, None)
    assert graph.producer[target.tensor].name == "relu"
    assert _path(graph, target.tensor, prediction) == "mean"


def test_openvino_static_batch_values_are_not_folded() -> None:
    """With a batch of 1 fixed, ShapeOf(x) is a constant to OpenVINO, but not to the hook (it changes the batch)."""
    model = _read_model_style(batch=1)
    OPENVINO.fold_static_shapes(model)
    graph = OPENVINO.view(model)
    assert [n.op for n in graph.nodes].count("Shape") == 1


def test_openvino_adaptive_pool_to_one_is_a_global_pool() -> None:
    x = ops.parameter([-1, 3, 8, 8], np.float32, name="x")
    relu = ops.relu(ops.convolution(x, ops.constant(random_weights(4, 3, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1]))
    pool = opset8.adaptive_avg_pool(relu, ov_const([1, 1]))
    flat = ops.reshape(pool, ov_const([0, -1]), True)
    logits = ops.matmul(flat, ops.constant(random_weights(4, 5)), False, False)
    logits.output(0).get_tensor().set_names({"logits"})
    graph = OPENVINO.view(ov.Model([ops.result(logits)], [x]))
    target = resolve(graph, "logits", None)
    plan = mean_plan(graph, plan_tail(graph, target.tensor, "logits"))
    assert plan is not None and plan.pw.boundary.op == "GlobalAveragePool"


def test_onnx_folds_padding_computed_from_the_map_size() -> None:
    """TensorFlow-style 'same' padding computed in the graph (Hugging Face's MobileNet): each Pad's output shape is
    unknown to ONNX shape inference until the padding before it is folded; the folding goes round by round."""
    nodes, weights, source = [], {"w0": random_weights(4, 3, 3, 3), "w1": random_weights(4, 4, 3, 3, seed=1)}, "x"
    for k in range(2):
        nodes += [
            helper.make_node("Shape", [source], [f"s{k}"], start=2),  # (H, W)
            helper.make_node("Mod", [f"s{k}", "two"], [f"r{k}"]),  # 1 where odd: pad one at the end
            helper.make_node("Concat", ["zeros", f"r{k}"], [f"p{k}"], axis=0),
            helper.make_node("Pad", [source, f"p{k}"], [f"padded{k}"]),
            helper.make_node("Conv", [f"padded{k}", f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{k}"], [f"relu{k}"]),
        ]
        source = f"relu{k}"
    weights |= {"two": np.array([2, 2], np.int64), "zeros": np.zeros(6, np.int64)}
    weights |= {"fc": random_weights(4, 5, seed=2)}
    nodes += [
        helper.make_node("GlobalAveragePool", [source], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    model = onnx_model(nodes, {"x": ["batch", 3, 7, 7]}, ["logits"], weights)
    assert sum(n.op == "Shape" for n in ONNX.view(model).nodes) == 2
    ONNX.fold_static_shapes(model)
    graph = ONNX.view(model)
    assert graph.tensor("relu0").shape == ("batch", 4, 8, 8) and graph.tensor("relu1").shape == ("batch", 4, 8, 8)
    assert not any(n.op == "Shape" for n in graph.nodes)
    assert resolve(graph, "logits", None).tensor == "relu1"


def test_onnx_average_pool_larger_than_the_map_is_global() -> None:
    """Hugging Face's EfficientNet pools with a kernel larger than the map (ceil_mode): one window, the mean."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["relu"]),
        helper.make_node("AveragePool", ["relu"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32], ceil_mode=1),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    graph = ONNX.view(
        onnx_model(
            nodes, {"x": ["batch", 3, 8, 8]}, ["logits"], {"w": random_weights(4, 3, 3, 3), "fc": random_weights(4, 5)}
        )
    )
    pool = next(n for n in graph.nodes if n.op == "AveragePool")
    assert pool.whole_window and "pooled" not in graph.spatial_axes  # no map after it: never a target
    target = resolve(graph, "logits", None)
    assert target.tensor == "relu" and _path(graph, "relu", "logits") == "mean"


def test_onnx_dimensions_computed_from_the_batch_are_resolved() -> None:
    """The legacy torch exporter's flatten, ``x.reshape(x.shape[0], C, -1)``, and a token expanded to the batch:
    ONNX shape inference leaves their dimensions unknown with a symbolic batch; the view resolves them from two
    batch sizes (the token count a transformer's planning needs)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["s"], end=1),
        helper.make_node("Concat", ["s", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["c", "target"], ["tokens"]),  # (B, 4, 64)
        helper.make_node("Concat", ["s", "ones"], ["expanded_shape"], axis=0),
        helper.make_node("Equal", ["expanded_shape", "minus_one"], ["is_free"]),
        helper.make_node("Where", ["is_free", "ones3", "expanded_shape"], ["token_shape"]),
        helper.make_node("Expand", ["cls", "token_shape"], ["cls_tokens"]),  # (B, 4, 1)
        helper.make_node("Concat", ["cls_tokens", "tokens"], ["sequence"], axis=2),  # (B, 4, 65)
        helper.make_node("ReduceMean", ["sequence"], ["pooled"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "fc"], ["logits"]),
    ]
    weights = {"w": random_weights(4, 3, 3, 3), "fc": random_weights(4, 5), "cls": random_weights(1, 4, 1)}
    weights |= {"tail": np.array([4, -1], np.int64), "ones": np.array([-1, -1], np.int64)}
    weights |= {"minus_one": np.array(-1, np.int64), "ones3": np.ones(3, np.int64)}
    graph = ONNX.view(onnx_model(nodes, {"x": ["batch", 3, 8, 8]}, ["logits"], weights))
    assert graph.tensor("tokens").shape == ("batch", 4, 64)
    assert graph.tensor("cls_tokens").shape == ("batch", 4, 1)
    assert graph.tensor("sequence").shape == ("batch", 4, 65)
