"""Rough per-image compute cost (multiply-accumulates) of graph parts, for ``ovxai inspect``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ovxai.graph import GraphView, Node, TailPlan


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


def hook_macs(graph: GraphView, plan: TailPlan, n: int, mask: str = "onehot", shortcut: bool = True) -> int:
    """MACs per image that the hook adds on the path it takes for ``plan`` with N = ``n`` positions.

    Mosaic: the whole tail N times. Shortcut: the rest of the tail N times, plus, for a linear
    boundary, one pass of its weight per mask weight (the per-position products), plus, for the
    Gaussian mask, the positionwise ops once per mask weight (on the full map)."""
    cut = plan.shortcut if shortcut else None
    if cut is None:
        return n * macs(graph, plan.nodes)
    passes = 1 if mask == "onehot" or not cut.positionwise else 3
    total = n * macs(graph, [node for node in plan.nodes if node.name not in cut.replaced])
    if cut.kind == "linear":
        total += passes * node_macs(graph, cut.boundary)
    if mask != "onehot":
        total += passes * macs(graph, cut.positionwise)
    return total
