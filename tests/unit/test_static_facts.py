"""The view knows every static fact (issue 19): shape arithmetic folded whatever tool wrote it, pools recognised by
what they compute, no degenerate automatic target, the private copies the hook reads, the export's prediction check.

Small hand-built graphs, no torch; every check asserts concrete values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import openvino.opset13 as ops
import pytest
from onnx import TensorProto, helper, numpy_helper
from openvino import opset8

from ovxai.errors import OvxaiError
from ovxai.exporter.pipeline import _moved, load_model
from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.hook.private_reads import private_chain
from ovxai.hook.tail import plan_tail
from ovxai.hook.target import pick_prediction, resolve


def _weights(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _i64(values: list[int]) -> ov.Node:
    return ops.constant(np.array(values, dtype=np.int64))


def _read_model_style(batch: int | None = None) -> ov.Model:
    """A conv classifier as OpenVINO's ONNX frontend writes it under ``read_model``: the bias reshaped to the
    rank of the convolution's output, the pool's axes counted as Range(2, rank), plus a batch-dependent flatten."""
    x = ops.parameter([-1 if batch is None else batch, 3, 8, 8], np.float32, name="x")
    conv = ops.convolution(x, ops.constant(_weights(4, 3, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    rank = ops.shape_of(ops.shape_of(conv))  # [4]
    ones = ops.broadcast(_i64([1]), ops.subtract(rank, _i64([2])))  # [1, 1]
    bias_shape = ops.concat([_i64([1, 4]), ones], 0)  # [1, 4, 1, 1], from the output's rank only
    bias = ops.reshape(ops.constant(_weights(4, seed=1)), bias_shape, False)
    relu = ops.relu(ops.add(conv, bias))
    relu.set_friendly_name("relu")
    axes = opset8.range(ops.constant(np.int64(2)), ops.squeeze(rank, _i64([0])), ops.constant(np.int64(1)), "i64")
    pool = ops.reduce_mean(relu, axes, keep_dims=True)
    batch_size = ops.gather(ops.shape_of(x), _i64([0]), ops.constant(np.int64(0)))  # depends on the batch
    flat = ops.reshape(pool, ops.concat([batch_size, _i64([-1])], 0), False)
    product = ops.matmul(flat, ops.constant(_weights(4, 5, seed=2)), False, False)
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
    plan = plan_tail(graph, target.tensor, prediction)
    assert graph.producer[target.tensor].name == "relu" and plan.shortcut is not None
    assert plan.shortcut.kind == "mean"


def test_openvino_static_batch_values_are_not_folded() -> None:
    """With a batch of 1 fixed, ShapeOf(x) is a constant to OpenVINO, but not to the hook (it changes the batch)."""
    model = _read_model_style(batch=1)
    OPENVINO.fold_static_shapes(model)
    graph = OPENVINO.view(model)
    assert [n.op for n in graph.nodes].count("Shape") == 1


def test_openvino_adaptive_pool_to_one_is_a_global_pool() -> None:
    x = ops.parameter([-1, 3, 8, 8], np.float32, name="x")
    relu = ops.relu(ops.convolution(x, ops.constant(_weights(4, 3, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1]))
    pool = opset8.adaptive_avg_pool(relu, _i64([1, 1]))
    flat = ops.reshape(pool, _i64([0, -1]), True)
    logits = ops.matmul(flat, ops.constant(_weights(4, 5)), False, False)
    logits.output(0).get_tensor().set_names({"logits"})
    graph = OPENVINO.view(ov.Model([ops.result(logits)], [x]))
    target = resolve(graph, "logits", None)
    cut = plan_tail(graph, target.tensor, "logits").shortcut
    assert cut is not None and cut.kind == "mean" and cut.boundary.op == "GlobalAveragePool"


def _onnx_model(nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray], size: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "facts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_onnx_folds_padding_computed_from_the_map_size() -> None:
    """TensorFlow-style 'same' padding computed in the graph (Hugging Face's MobileNet): each Pad's output shape is
    unknown to ONNX shape inference until the padding before it is folded; the folding goes round by round."""
    nodes, weights, source = [], {"w0": _weights(4, 3, 3, 3), "w1": _weights(4, 4, 3, 3, seed=1)}, "x"
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
    weights |= {"fc": _weights(4, 5, seed=2)}
    nodes += [
        helper.make_node("GlobalAveragePool", [source], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    model = _onnx_model(nodes, weights, size=7)
    assert ONNX.view(model).tensor("relu1").shape[2:] != (8, 8)  # unknown before folding
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
    graph = ONNX.view(_onnx_model(nodes, {"w": _weights(4, 3, 3, 3), "fc": _weights(4, 5)}))
    pool = next(n for n in graph.nodes if n.op == "AveragePool")
    assert pool.whole_window and "pooled" not in graph.spatial_axes  # no map after it: never a target
    target = resolve(graph, "logits", None)
    assert target.tensor == "relu" and plan_tail(graph, "relu", "logits").shortcut.kind == "mean"  # type: ignore[union-attr]


def test_only_one_by_one_maps_are_refused_in_one_line() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[8, 8]),  # 8x8 with an 8x8 kernel: 1 x 1
        helper.make_node("Relu", ["c"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    graph = ONNX.view(_onnx_model(nodes, {"w": _weights(4, 3, 8, 8), "fc": _weights(4, 5)}))
    with pytest.raises(OvxaiError, match=r"every feature map .* is 1 x 1 .*'relu', batchx4x1x1"):
        resolve(graph, "logits", None)


def test_unknown_channels_ask_for_the_input_shape(tmp_path: Path) -> None:
    x = ops.parameter(ov.PartialShape.dynamic(4), np.float32, name="x")
    relu = ops.relu(ops.convolution(x, ops.constant(_weights(4, 3, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1]))
    pooled = ops.reduce_mean(relu, _i64([2, 3]), keep_dims=False)
    model = ov.Model([ops.result(ops.matmul(pooled, ops.constant(_weights(4, 5)), False, False))], [x])
    ov.save_model(model, str(tmp_path / "any.xml"))
    with pytest.raises(OvxaiError, match=r"is \[\?,\?,\?,\?\]: its channels and size are unknown.*input_shape=\?,3"):
        load_model(tmp_path / "any.xml")
    assert load_model(tmp_path / "any.xml", ["batch", 3, 16, 16]).graph.input_dims() == [None, 3, 16, 16]


def test_private_chain_copies_a_residual_block_back_to_its_convolutions() -> None:
    """relu(conv1(a) + bias + skip), skip = conv0(x): the chain is both convolutions (each widened by one output
    channel), both adds and the ReLU. The residual operand is recomputed, not read: a second reader of it would
    keep the engine from summing into it in place. What the convolutions read (x, a) is read as it is."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["skip"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["skip"], ["a"]),
        helper.make_node("Conv", ["a", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "b"], ["biased"]),
        helper.make_node("Add", ["biased", "skip"], ["summed"]),
        helper.make_node("Relu", ["summed"], ["t"]),
        helper.make_node("GlobalAveragePool", ["t"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    weights = {"w0": _weights(4, 3, 3, 3), "w1": _weights(4, 4, 3, 3), "b": _weights(1, 4, 1, 1), "fc": _weights(4, 5)}
    graph = ONNX.view(_onnx_model(nodes, weights))
    chain, widened = private_chain(graph, "t")
    assert [n.outputs[0] for n in chain] == ["skip", "c", "biased", "summed", "t"]
    convs = {graph.producer["skip"].name, graph.producer["c"].name}
    assert set(widened) == convs and all(w.padded == {1: 0} and w.channels == 4 for w in widened.values())


def test_prediction_check_is_bit_for_bit_but_past_the_linear_shortcut() -> None:
    expected = np.array([[1.0, -2.0, 4.0]], np.float32)
    assert _moved(expected.copy(), expected, None) is None
    nudged = expected + np.float32(2.0**-21)
    assert _moved(nudged, expected, None) == pytest.approx(2.0**-21)
    assert _moved(nudged, expected, 23) is None  # the reordered sums: within 2^-19 of the largest
    assert _moved(expected + np.float32(1e-3), expected, 23) is not None
    assert _moved(expected + np.float32(1e-3), expected, 7) is None  # bfloat16: 2^-3 of the largest
