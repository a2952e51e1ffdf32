"""What the hook adds per image, in multiply-accumulates, for ``ovxai inspect``."""

from __future__ import annotations

from typing import Any

from ovxai.graph.macs import macs, node_macs
from ovxai.graph.view import GraphView, Kind
from ovxai.hook.gradient.backward import BackwardPlan
from ovxai.hook.options import HookOptions
from ovxai.hook.paths import CNN_PATHS, VIT_PATHS, Choice, choose
from ovxai.hook.tail import TailPlan, final_classifier, tail_logits
from ovxai.hook.tokens import TokenPlan


def hook_macs(
    graph: GraphView, cut: TailPlan | TokenPlan, options: HookOptions | None = None, selected: int | None = None
) -> int:
    """MACs per image of the hook on the path ``options`` lead to (each path counts its own)."""
    options = options or HookOptions()
    paths: tuple[Any, ...] = VIT_PATHS if isinstance(cut, TokenPlan) else CNN_PATHS
    return choice_macs(graph, cut, choose(paths, graph, cut, options), options, selected)


def choice_macs(
    graph: GraphView, cut: TailPlan | TokenPlan, choice: Choice[Any], options: HookOptions, selected: int | None = None
) -> int:
    """MACs per image of the hook on a chosen path; ``selected``: the maps' class count where only the selected
    classes' rows of the final classifier run on the copies (score logits or sigmoid, explain topK or ids)."""
    total = choice.path.macs(graph, cut, choice.plan, options.mask)
    tail = cut.tail if isinstance(cut, TokenPlan) else cut
    classifier = None if selected is None else final_classifier(graph, tail.nodes, tail_logits(graph, tail))
    if classifier is None or classifier.product.name in choice.replaced():
        return total
    n = cut.grid[0] * cut.grid[1] if isinstance(cut, TokenPlan) else tail.positions(graph)
    return total - n * node_macs(graph, classifier.product) * (classifier.classes - selected) // classifier.classes  # type: ignore[operator]


def backward_macs(graph: GraphView, plan: BackwardPlan) -> int:
    """MACs per image and explained class of a gradient method's backward: each product's transpose costs what the
    product does (a convolution's transposed convolution, a linear layer's product with its weight), twice for a
    product of two activations (both operands get a gradient)."""
    total = macs(graph, plan.nodes)
    for node in plan.nodes:
        if node.op == "MatMul" and all(graph.kind.get(i) is Kind.ACTIVATION for i in node.inputs):
            total += node_macs(graph, node)
    return total
