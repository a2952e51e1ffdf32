"""What the hook adds per image, in multiply-accumulates, for ``ovxai inspect``."""

from __future__ import annotations

from ovxai.graph.macs import macs, node_macs
from ovxai.graph.view import GraphView
from ovxai.hook.tail import TailPlan, final_classifier, tail_logits


def hook_macs(
    graph: GraphView, plan: TailPlan, n: int, mask: str = "onehot", shortcut: bool = True, selected: int | None = None
) -> int:
    """MACs per image of the hook (see :func:`_path_macs`); ``selected``: the maps' class count where only the
    chosen classes' rows of the final classifier run on the copies (score logits or sigmoid, explain topK or ids)."""
    total = _path_macs(graph, plan, n, mask, shortcut)
    classifier = None if selected is None else final_classifier(graph, plan.nodes, tail_logits(graph, plan))
    cut = plan.shortcut if shortcut else None
    if classifier is None or (cut is not None and classifier.product.name in cut.replaced):
        return total
    return total - n * node_macs(graph, classifier.product) * (classifier.classes - selected) // classifier.classes  # type: ignore[operator]


def _path_macs(graph: GraphView, plan: TailPlan, n: int, mask: str, shortcut: bool) -> int:
    """MACs per image that the hook adds on the path it takes for ``plan`` with N = ``n`` positions.

    Mosaic: the whole tail N times. Windows (see ovxai.incremental): each convolution on its copies' windows,
    then the rest of the tail N times. Shortcut: the rest of the tail N times, plus, for the Gaussian mask,
    the positionwise ops once per mask weight (on the full map). A linear boundary's per-position products
    replace the original product (the same multiply-adds) and give the one-hot copies too; the Gaussian mask
    through positionwise ops that do not commute with its scales needs one more pass of the weight per mask weight."""
    cut = plan.shortcut if shortcut else None
    if cut is None:
        from ovxai.hook.windows import plan_windows  # it reads this module's counts

        windows = plan_windows(graph, plan, mask) if shortcut else None
        return n * macs(graph, plan.nodes) if windows is None else windows.macs(graph, plan.nodes)
    total = n * macs(graph, [node for node in plan.nodes if node.name not in cut.replaced])
    if mask == "onehot" or not cut.positionwise or cut.homogeneous:
        return total
    passes = 3  # the Gaussian kernel's weights 4, 2, 1 / 16, each through the positionwise ops
    return total + passes * (
        macs(graph, cut.positionwise) + (node_macs(graph, cut.boundary) if cut.kind == "linear" else 0)
    )
