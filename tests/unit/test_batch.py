"""Freeing a batch size an exporter baked into Reshape targets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx.reference
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
    random_weights,
)

from ovxai.errors import OvxaiError
from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.graph.batch import plan_free_batch

# -- batch ------------------------------------------------------------------------------------------


def _reshaped(
    target: Sequence[int], batch: int | str = 1, transpose: bool = False, features: int = 32
) -> onnx.ModelProto:
    """x (batch,3,4,4) -> Conv -> (batch,2,4,4) [-> Transpose to (2,batch,4,4)] -> Reshape(target) -> MatMul."""
    nodes = [conv_node("x", "w", "map", "/conv", pads=[1, 1, 1, 1])]
    if transpose:
        nodes.append(onnx_node("Transpose", ["map"], ["moved"], "/move", perm=[1, 0, 2, 3]))
    nodes += [
        onnx_node("Reshape", ["moved" if transpose else "map", "target"], ["flat"], "/view"),
        onnx_node("MatMul", ["flat", "w_fc"], ["logits"], "/fc"),
    ]
    weights = {
        "w": random_weights(2, 3, 3, 3),
        "target": np.array(target, np.int64),
        "w_fc": random_weights(features, 5),
    }
    return onnx_model(nodes, {"x": (batch, 3, 4, 4)}, ["logits"], weights)


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
    x = ov_input((2, 8))
    view = ov_named(ops.reshape(x, ov_const([2, 2, 4]), special_zero=False), "view")
    (ov_fix,) = plan_free_batch(OPENVINO.view(ov.Model([ops.result(view)], [x])))
    assert (ov_fix.node.name, ov_fix.target.tolist()) == ("view", [0, 2, 4])


def test_free_batch_leaves_other_reshapes_alone() -> None:
    assert plan_free_batch(ONNX.view(_reshaped([1, -1], transpose=True))) == []  # data starts with 2, not B
    assert plan_free_batch(ONNX.view(_reshaped([1, -1], batch="N"))) == []  # the batch is already free
    assert plan_free_batch(ONNX.view(_reshaped([-1, 32]))) == []  # nothing baked


def test_free_batch_refuses_a_target_with_another_zero() -> None:
    with pytest.raises(OvxaiError, match="the batch size is fixed to 1 in node '/view'; re-export the model with a"):
        plan_free_batch(ONNX.view(_reshaped([1, 0, -1], features=16)))
