"""Rough per-image compute cost (multiply-accumulates) of graph nodes."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ovxai.graph.view import GraphView, Node


def node_macs(graph: GraphView, node: Node) -> int:
    """MACs of one convolution or matrix product for one image: every output value (batch excluded)
    sums ``weight_inner`` products. 0 for other ops or unknown shapes."""
    out = graph.tensor(node.outputs[0]).shape
    if node.weight_inner is None or out is None:
        return 0
    dims = [*out[1:], *node.weight_inner]
    return math.prod(d for d in dims if isinstance(d, int)) if all(isinstance(d, int) for d in dims) else 0


def macs(graph: GraphView, nodes: Iterable[Node]) -> int:
    return sum(node_macs(graph, n) for n in nodes)
