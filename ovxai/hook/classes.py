"""Which classes get a map (``explain`` all, topK or ids), and the classifier rows the copies then need.

topK takes each image's K best classes by the model's own prediction output, inside the graph; fixed ids are
the same for every image. The maps' class ids are exposed as ``saliency_classes`` (B, K'). Where each map
needs only its own class's logit (score logits or sigmoid) and the tail ends in a plain product with a stored
weight, the copies run only the selected classes' rows of it: K' of 1000 columns.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ovxai.graph.ops import Ops
from ovxai.graph.view import GraphView
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import ClassAxis
from ovxai.hook.tail import Classifier, TailPlan, final_classifier, tail_logits

T = TypeVar("T")


class Chooser(Protocol[T]):
    """What the class selection reads of its hook (:class:`~ovxai.hook.saliency.SaliencyHook`)."""

    ops: Ops[T]
    graph: GraphView
    tail: TailPlan
    options: HookOptions
    batch: T  # 1-element int64 tensors: B and N
    n: T

    def per_image(self, classes: T, class_axis: ClassAxis) -> T: ...


class ClassSelection(Generic[T]):
    """The selected classes of one hook, emitted once when first read."""

    def __init__(self, hook: Chooser[T]) -> None:
        self.hook = hook
        self.selection = hook.options.selection
        self._chosen: T | None = None
        self.ids: T | None = None  # (B, K') class ids of the maps, once chosen

    def chosen(self) -> T:
        """(B, K') ids by each image's prediction (topK), or the fixed ids (K',)."""
        if self._chosen is None:
            ops, batch, top, ids = self.hook.ops, self.hook.batch, self.selection.top, self.selection.ids
            if top is not None:
                scores = ops.reshape(ops.tensor(self.hook.tail.prediction), ops.concat([batch, ops.i64([-1])]))
                self._chosen = self.ids = ops.topk(scores, top)
            else:
                assert ids is not None
                self._chosen = ops.i64(list(ids))
                self.ids = ops.expand(ops.unsqueeze(self._chosen, 0), ops.concat([batch, ops.i64([len(ids)])]))
        return self._chosen

    def scores(self, scores: T, class_axis: ClassAxis) -> T:
        """The selected classes' scores from per-image (B, N, K) rows or (B, K, N) columns; selecting before the
        maps are laid out class-major moves only K' columns."""
        if self.selection.every:
            return scores
        ops, chosen = self.hook.ops, self.chosen()
        if self.selection.top is not None:
            shape = self.hook.per_image(ops.i64([self.selection.top]), class_axis)
            return ops.gather_elements(scores, ops.expand(ops.unsqueeze(chosen, 3 - class_axis), shape), class_axis)
        return ops.gather(scores, chosen, class_axis)

    def prunable(self, replaced: frozenset[str]) -> Classifier | None:
        """The final classifier, when each map needs only its own class's logit and only some classes get a map
        (not when the path computed the classifier itself: the linear path gives every class's copies)."""
        hook = self.hook
        if hook.options.score == "softmax" or self.selection.every:
            return None
        found = final_classifier(hook.graph, hook.tail.nodes, tail_logits(hook.graph, hook.tail))
        return None if found is None or found.product.name in replaced else found

    def pruned_scores(self, classifier: Classifier, rows: T) -> T:
        """The copies' logits of the selected classes only: their (B*N, D) ``rows`` times those classes' weight
        rows."""
        hook = self.hook
        ops, product, chosen = hook.ops, classifier.product, self.chosen()
        weight = ops.gather(ops.tensor(product.inputs[1]), chosen, 0 if product.transpose_b else 1)
        per_image = self.selection.top is not None
        if per_image:  # (B, N, D) @ (B, D, K')
            rows = ops.reshape(rows, ops.concat([hook.batch, hook.n, ops.i64([-1])]))
            weight = ops.transpose(weight, [0, 2, 1] if product.transpose_b else [1, 0, 2])
        elif product.transpose_b:  # (K', D) -> (D, K')
            weight = ops.transpose(weight, [1, 0])
        scores = ops.matmul(rows, weight)
        if classifier.bias is not None:
            bias = ops.gather(ops.reshape(ops.tensor(classifier.bias), ops.i64([-1])), chosen, 0)
            scores = ops.binary("Add", scores, ops.unsqueeze(bias, 1) if per_image else bias)
        return scores
