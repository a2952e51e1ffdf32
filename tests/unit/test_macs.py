"""Multiply-accumulate counts of graph nodes."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.reference
from graphs import (
    conv_node,
    node_named,
    onnx_model,
    onnx_node,
    random_weights,
)

from ovxai.formats.onnx import ONNX
from ovxai.formats.openvino import OPENVINO
from ovxai.graph.macs import macs, node_macs
from ovxai.hook.tail import plan_tail

# -- cost -------------------------------------------------------------------------------------------


def _cost_model() -> onnx.ModelProto:
    """x (2,6,8,8): Conv 6->6 3x3 pad 1, grouped Conv (3 groups) 3x3, GAP, Gemm transB 6->5, MatMul 5->7."""
    nodes = [
        conv_node("x", "w_conv", "c", "/conv", pads=[1, 1, 1, 1]),
        conv_node("c", "w_group", "g", "/group", group=3),
        onnx_node("GlobalAveragePool", ["g"], ["p"], "/gap"),
        onnx_node("Flatten", ["p"], ["f"], "/flatten"),
        onnx_node("Gemm", ["f", "w_gemm"], ["gemm"], "/gemm", transB=1),
        onnx_node("MatMul", ["gemm", "w_mm"], ["logits"], "/mm"),
    ]
    weights = {
        "w_conv": random_weights(6, 6, 3, 3),
        "w_group": random_weights(6, 2, 3, 3),
        "w_gemm": random_weights(5, 6),
        "w_mm": random_weights(5, 7),
    }
    return onnx_model(nodes, {"x": (2, 6, 8, 8)}, ["logits"], weights)


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
    assert graph.tensor(node_named(graph, "/group").inputs[1]).shape == (3, 2, 2, 3, 3)  # OpenVINO's grouped layout
    assert macs(graph, graph.nodes) == sum(COSTS.values())


def test_macs_of_unknown_shapes_and_other_ops_are_zero() -> None:
    nodes = [conv_node("x", "w", "c", "/conv"), onnx_node("Relu", ["c"], ["r"], "/relu")]
    graph = ONNX.view(onnx_model(nodes, {"x": ("N", 3, "H", "W")}, ["r"], {"w": random_weights(4, 3, 3, 3)}))
    shape = graph.tensor("c").shape
    assert shape is not None and shape[:2] == ("N", 4) and not any(isinstance(d, int) for d in shape[2:])
    assert [node_macs(graph, n) for n in graph.nodes] == [0, 0]
