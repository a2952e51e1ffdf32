"""The tail plan, and which pools the global-pool path recognises."""

from __future__ import annotations

from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from graphs import (
    mean_plan,
    node_named,
    onnx_node,
    ov_const,
    ov_input,
    ov_named,
    pooled_head,
    random_weights,
    resnet_model,
)

from ovxai.errors import OvxaiError
from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.graph.view import GraphView, Kind
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.linear import LINEAR
from ovxai.hook.paths.mean import MeanPlan
from ovxai.hook.paths.path import Declined
from ovxai.hook.paths.positionwise import Positionwise
from ovxai.hook.tail import plan_tail

# -- the tail plan ----------------------------------------------------------------------------------


def test_tail_plan_nodes_and_side_inputs() -> None:
    graph = ONNX.view(resnet_model("view"))
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
    assert mean_plan(graph, inside) is None  # T's first reader is the Add
    assert isinstance(LINEAR.plan(graph, inside, HookOptions()), Declined)
    after = plan_tail(graph, "a5", "logits")
    assert [n.op for n in after.nodes] == ["GlobalAveragePool", "Reshape", "Gemm"]
    assert after.side_inputs == {"view_shape": Kind.SHAPE, "w_fc": Kind.CONSTANT, "b_fc": Kind.CONSTANT}
    assert mean_plan(graph, after) == MeanPlan(
        Positionwise((), "a5", node_named(graph, "/avgpool/GlobalAveragePool")), True
    )
    assert (after.target, after.prediction) == ("a5", "logits")


def test_tail_plan_refuses_a_target_that_does_not_feed_the_prediction() -> None:
    graph = ONNX.view(resnet_model(extra=[(onnx_node("Relu", ["stem"], ["side"], "/side"), "side")]))
    with pytest.raises(OvxaiError, match="target tensor 'side' does not feed the prediction output 'logits'; pick"):
        plan_tail(graph, "side", "logits")


POOLS = {
    "global-average-pool": ([onnx_node("GlobalAveragePool", ["map"], ["pooled"], "/pool")], 4, 17, True),
    "reduce-mean-2-3": ([onnx_node("ReduceMean", ["map"], ["pooled"], "/pool", axes=[2, 3], keepdims=0)], 4, 17, False),
    "reduce-mean-input-axes": (
        [onnx_node("ReduceMean", ["map", "axes"], ["pooled"], "/pool", keepdims=1)],
        4,
        18,
        True,
    ),
    "average-pool-whole": ([onnx_node("AveragePool", ["map"], ["pooled"], "/pool", kernel_shape=[3, 3])], 4, 17, True),
    "average-pool-2x2": ([onnx_node("AveragePool", ["map"], ["pooled"], "/pool", kernel_shape=[2, 2])], 16, 17, None),
    "average-pool-padded": (
        [onnx_node("AveragePool", ["map"], ["pooled"], "/pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        36,
        17,
        None,
    ),
    "reduce-mean-channels": (
        [onnx_node("ReduceMean", ["map"], ["pooled"], "/pool", axes=[1], keepdims=1)],
        9,
        17,
        None,
    ),
    "reduce-mean-1-2-3": (
        [onnx_node("ReduceMean", ["map"], ["pooled"], "/pool", axes=[1, 2, 3], keepdims=1)],
        1,
        17,
        None,
    ),
    "global-max-pool": ([onnx_node("GlobalMaxPool", ["map"], ["pooled"], "/pool")], 4, 17, None),
}


@pytest.mark.parametrize("pool", POOLS, ids=list(POOLS))
def test_fast_path_is_a_global_average_pool_over_h_and_w(pool: str) -> None:
    nodes, features, opset, keepdims = POOLS[pool]
    graph = pooled_head(nodes, features, opset, axes=np.array([2, -1]))
    plan = plan_tail(graph, "map", "logits")
    assert [n.name for n in plan.nodes] == ["/pool", "/Flatten", "/fc/Gemm"]
    expected = None if keepdims is None else MeanPlan(Positionwise((), "map", node_named(graph, "/pool")), keepdims)
    assert mean_plan(graph, plan) == expected


def test_fast_path_needs_the_pool_to_be_the_only_reader() -> None:
    pool = [
        onnx_node("GlobalAveragePool", ["map"], ["gap"], "/pool"),
        onnx_node("Shape", ["map"], ["map_shape"], "/shape"),  # reading only T's shape is fine
        onnx_node("Slice", ["map_shape", "zero", "one"], ["batch"], "/batch"),
        onnx_node("Concat", ["batch", "minus_one"], ["target"], "/target", axis=0),
        onnx_node("Reshape", ["gap", "target"], ["pooled"], "/view"),
    ]
    ints = {"zero": np.array([0]), "one": np.array([1]), "minus_one": np.array([-1])}
    graph = pooled_head(pool, 4, **ints)
    plan = plan_tail(graph, "map", "logits")
    assert mean_plan(graph, plan) == MeanPlan(Positionwise((), "map", node_named(graph, "/pool")), True)
    assert plan.side_inputs["zero"] is Kind.CONSTANT and "map_shape" not in plan.side_inputs
    skip = [
        onnx_node("GlobalAveragePool", ["map"], ["gap"], "/pool"),
        onnx_node("ReduceMax", ["map"], ["peak"], "/peak", axes=[2, 3], keepdims=1),
        onnx_node("Add", ["gap", "peak"], ["pooled"], "/add"),
    ]
    skipped = pooled_head(skip, 4)
    assert mean_plan(skipped, plan_tail(skipped, "map", "logits")) is None


def test_fast_path_through_openvino() -> None:
    def head(pool: Any) -> GraphView:
        x = ov_input((1, 3, 5, 5))
        conv = ov_named(
            ops.convolution(x, ops.constant(random_weights(4, 3, 3, 3)), [1, 1], [0, 0], [0, 0], [1, 1]), "map"
        )
        pooled = ov_named(pool(conv), "pooled")
        flat = ov_named(ops.reshape(pooled, ov_const([0, -1]), special_zero=True), "flat")
        features = flat.get_output_partial_shape(0)[1].get_length()
        logits = ov_named(ops.matmul(flat, ops.constant(random_weights(features, 10)), False, False), "logits")
        return OPENVINO.view(ov.Model([ops.result(logits)], [x]))

    def keepdims(pool: Any) -> bool | None:
        graph = head(pool)
        plan = plan_tail(graph, "map", "logits")
        assert [n.name for n in plan.nodes] == ["pooled", "flat", "logits"]
        mean = mean_plan(graph, plan)
        return None if mean is None else mean.keepdims

    assert keepdims(lambda m: ops.reduce_mean(m, ov_const([2, 3]), keep_dims=False)) is False
    assert keepdims(lambda m: ops.reduce_mean(m, ov_const([-1, -2]), keep_dims=True)) is True
    assert keepdims(lambda m: ops.avg_pool(m, [1, 1], [0, 0], [0, 0], [3, 3], exclude_pad=True)) is True
    assert keepdims(lambda m: ops.avg_pool(m, [1, 1], [0, 0], [0, 0], [2, 2], exclude_pad=True)) is None
    assert keepdims(lambda m: ops.reduce_mean(m, ov_const([1]), keep_dims=True)) is None
    assert keepdims(lambda m: ops.reduce_max(m, ov_const([2, 3]), keep_dims=True)) is None
