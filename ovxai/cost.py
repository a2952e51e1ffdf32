"""Rough per-image compute cost (multiply-accumulates) of graph parts, for ``ovxai inspect``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ovxai.graph import GraphView, Node

# op -> how many leading weight dimensions are *not* summed over (ONNX and OpenVINO names)
_CONVOLUTIONS = {"Conv": 1, "ConvTranspose": 1, "Convolution": 1, "GroupConvolution": 2}
_MATMULS = ("Gemm", "MatMul")


def node_macs(graph: GraphView, node: Node) -> int:
    """MACs of one convolution or matrix product for one image; 0 for other ops or unknown shapes."""
    if (node.op not in _CONVOLUTIONS and node.op not in _MATMULS) or len(node.inputs) < 2:
        return 0
    out = graph.tensor(node.outputs[0]).shape
    weight = graph.tensor(node.inputs[1]).shape
    if out is None or weight is None:
        return 0
    if node.op in _CONVOLUTIONS:
        inner = weight[_CONVOLUTIONS[node.op] :]
    elif node.op == "Gemm" and node.attrs.get("transB"):
        inner = weight[1:]
    else:
        inner = weight[:1] if node.op == "Gemm" or not node.attrs.get("transpose_b") else weight[1:]
    dims = [*out[1:], *inner]
    return math.prod(dims) if all(isinstance(d, int) for d in dims) else 0  # type: ignore[arg-type]


def macs(graph: GraphView, nodes: Iterable[Node]) -> int:
    return sum(node_macs(graph, n) for n in nodes)
