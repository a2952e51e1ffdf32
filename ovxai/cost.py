"""Rough per-image compute cost (multiply-accumulates) of graph parts, for ``ovxai inspect``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ovxai.graph import GraphView, Node


def node_macs(graph: GraphView, node: Node) -> int:
    """MACs of one Conv / Gemm / MatMul for one image; 0 for other ops or unknown shapes."""
    if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.inputs) < 2:
        return 0
    out = graph.tensor(node.outputs[0]).shape
    weight = graph.tensor(node.inputs[1]).shape
    data = graph.tensor(node.inputs[0]).shape
    if out is None or weight is None or data is None:
        return 0
    per_image_out = [d for d in out[1:]]
    if not all(isinstance(d, int) for d in per_image_out):
        return 0
    if node.op in ("Conv", "ConvTranspose"):
        inner = weight[1:]
    else:
        inner = weight[:1] if node.op == "MatMul" or not node.attrs.get("transB") else weight[1:]
    if not all(isinstance(d, int) for d in inner):
        return 0
    return math.prod(per_image_out) * math.prod(inner)  # type: ignore[arg-type]


def macs(graph: GraphView, nodes: Iterable[Node]) -> int:
    return sum(node_macs(graph, n) for n in nodes)
