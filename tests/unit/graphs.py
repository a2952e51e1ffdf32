"""Small graphs built by hand for the unit tier: ONNX models with ``onnx.helper`` and OpenVINO models with its
opset, named the way each exporter names them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import openvino.opset13 as ops
from onnx import TensorProto, helper, numpy_helper

from ovxai.formats.onnx import ONNX
from ovxai.graph.view import GraphView, Node
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.mean import MEAN, MeanPlan
from ovxai.hook.paths.path import Declined
from ovxai.hook.tail import TailPlan

FLOAT = TensorProto.FLOAT


def random_weights(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def onnx_model(
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


def onnx_node(op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=name, **attrs)


def conv_node(x: str, w: str, out: str, name: str, **attrs: Any) -> onnx.NodeProto:
    return onnx_node("Conv", [x, w], [out], name, **attrs)


def resnet_model(flatten: str = "flatten", extra: Sequence[tuple[onnx.NodeProto, str]] = ()) -> onnx.ModelProto:
    """A one-block ResNet with TorchScript-style node names: x (1,3,16,16) -> 8x8x8 maps -> 10 logits.

    ``flatten='view'`` replaces Flatten by EfficientNet's ``x.view(bs, -1)`` with ``bs`` read from the input;
    ``extra`` adds (node, output) pairs.
    """
    nodes = [
        conv_node("x", "w_stem", "stem", "/conv1/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        onnx_node("Relu", ["stem"], ["stem_relu"], "/relu/Relu"),
        conv_node("stem_relu", "w_a", "a1", "/layer4/layer4.0/conv1/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Relu", ["a1"], ["a2"], "/layer4/layer4.0/relu/Relu"),
        conv_node("a2", "w_b", "a3", "/layer4/layer4.0/conv2/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Add", ["a3", "stem_relu"], ["a4"], "/layer4/layer4.0/Add"),
        onnx_node("Relu", ["a4"], ["a5"], "/layer4/layer4.0/relu_1/Relu"),
        onnx_node("GlobalAveragePool", ["a5"], ["pooled"], "/avgpool/GlobalAveragePool"),
    ]
    if flatten == "view":
        nodes += [
            onnx_node("Shape", ["x"], ["x_shape"], "/Shape"),
            onnx_node("Gather", ["x_shape", "zero"], ["bs"], "/Gather", axis=0),
            onnx_node("Unsqueeze", ["bs", "zero_axis"], ["bs1"], "/Unsqueeze"),
            onnx_node("Concat", ["bs1", "minus_one"], ["view_shape"], "/Concat", axis=0),
            onnx_node("Reshape", ["pooled", "view_shape"], ["flat"], "/Reshape"),
        ]
    else:
        nodes.append(onnx_node("Flatten", ["pooled"], ["flat"], "/Flatten"))
    nodes.append(onnx_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], "/fc/Gemm", transB=1))
    nodes += [node for node, _ in extra]
    weights = {
        "w_stem": random_weights(8, 3, 3, 3),
        "w_a": random_weights(8, 8, 3, 3, seed=1),
        "w_b": random_weights(8, 8, 3, 3, seed=2),
        "w_fc": random_weights(10, 8, seed=3),
        "b_fc": random_weights(10, seed=4),
        "zero": np.array(0, np.int64),
        "zero_axis": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64),
    }
    if flatten != "view":
        weights = {k: v for k, v in weights.items() if k.startswith(("w_", "b_"))}
    return onnx_model(nodes, {"x": (1, 3, 16, 16)}, ["logits", *(out for _, out in extra)], weights)


def pooled_head(pool: Sequence[onnx.NodeProto], features: int, opset: int = 17, **extra: np.ndarray) -> GraphView:
    """x (1,3,5,5) -> Conv -> 'map' (1,4,3,3) -> ``pool`` (reads 'map', writes 'pooled') -> Flatten -> Gemm."""
    nodes = [
        conv_node("x", "w", "map", "/features/Conv"),
        *pool,
        onnx_node("Flatten", ["pooled"], ["flat"], "/Flatten"),
        onnx_node("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    weights = {"w": random_weights(4, 3, 3, 3), "w_fc": random_weights(10, features, seed=1), **extra}
    return ONNX.view(onnx_model(nodes, {"x": (1, 3, 5, 5)}, ["logits"], weights, opset))


def ov_named(node: Any, name: str) -> Any:
    """An OpenVINO node with a friendly name and the same name on its output tensor."""
    node.set_friendly_name(name)
    node.output(0).get_tensor().set_names({name})
    return node


def ov_const(value: Sequence[int]) -> Any:
    return ops.constant(np.array(value, np.int64))


def ov_input(shape: Sequence[int]) -> Any:
    return ov_named(ops.parameter(list(shape), np.float32), "x")


def node_named(graph: GraphView, name: str) -> Node:
    return next(n for n in graph.nodes if n.name == name)


def mean_plan(graph: GraphView, tail: TailPlan) -> MeanPlan | None:
    """The global-pool path's plan, None where it declines."""
    plan = MEAN.plan(graph, tail, HookOptions())
    return None if isinstance(plan, Declined) else plan


def spatial_model() -> onnx.ModelProto:
    """One map through every kind of op that keeps, moves or ends the image's axes."""
    nodes = [
        conv_node("x", "w", "c", "/conv", pads=[1, 1, 1, 1]),  # (1, 8, 4, 6)
        onnx_node("Relu", ["c"], ["r"], "/relu"),
        onnx_node("Transpose", ["r"], ["nhwc"], "/nhwc", perm=[0, 2, 3, 1]),  # (1, 4, 6, 8)
        onnx_node("Reshape", ["r", "groups"], ["shuffled"], "/shuffle"),  # (1, 2, 4, 4, 6): H, W stay last
        onnx_node("Transpose", ["shuffled"], ["swapped"], "/swap", perm=[0, 2, 1, 3, 4]),
        onnx_node("Reshape", ["swapped", "back"], ["unshuffled"], "/unshuffle"),  # (1, 8, 4, 6)
        onnx_node("Reshape", ["r", "tokens"], ["rows"], "/rows"),  # (1, 8, 24, 1): H, W are gone
        onnx_node("Flatten", ["r"], ["flat"], "/flatten"),
        onnx_node("GlobalAveragePool", ["r"], ["gap"], "/gap"),
        onnx_node("ReduceMean", ["r"], ["channel_mean"], "/channel_mean", axes=[1], keepdims=1),
        onnx_node("ReduceMean", ["r"], ["width_mean"], "/width_mean", axes=[3], keepdims=1),
        onnx_node("Transpose", ["r"], ["r_t"], "/r_t", perm=[0, 1, 3, 2]),  # (1, 8, 6, 4)
        onnx_node("MatMul", ["r", "r_t"], ["attention"], "/attention"),  # (1, 8, 4, 4): two activations
        onnx_node("MatMul", ["r", "w_mm"], ["projected"], "/project"),  # sums over W
        onnx_node("MatMul", ["nhwc", "w_pointwise"], ["pointwise"], "/pointwise"),  # (1, 4, 6, 5): a per-pixel Linear
        onnx_node("Transpose", ["nhwc"], ["nhwc_t"], "/nhwc_t", perm=[0, 1, 3, 2]),  # (1, 4, 8, 6)
        onnx_node("MatMul", ["nhwc", "nhwc_t"], ["mixed"], "/mixed"),  # (1, 4, 6, 6): two activations
        onnx_node("Sigmoid", ["r"], ["s"], "/sigmoid"),
        onnx_node("Mul", ["r", "s"], ["swish"], "/swish"),
    ]
    weights = {
        "w": random_weights(8, 3, 3, 3),
        "groups": np.array([1, 2, 4, 4, 6]),
        "back": np.array([1, 8, 4, 6]),
        "tokens": np.array([1, 8, 24, 1]),
        "w_mm": random_weights(6, 5),
        "w_pointwise": random_weights(8, 5),
    }
    outputs = ["nhwc", "unshuffled", "rows", "flat", "gap", "channel_mean", "width_mean", "attention"]
    return onnx_model(nodes, {"x": (1, 3, 4, 6)}, [*outputs, "projected", "pointwise", "mixed", "swish"], weights)
