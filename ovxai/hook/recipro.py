"""The explanatory hook (Recipro-CAM inside the graph), written once for every graph format.

The hook is expressed against :class:`~ovxai.graph.ops.Ops`, which each format adapter carries out by emitting
nodes into its own graph (ONNX NodeProtos, OpenVINO opset nodes). Everything is derived from the target's
*runtime* shape, so the hook stores no mask constant and one exported model explains any input size.

With T of shape (B, C, H, W) and N = H*W:

1. copies: the tail's counterparts for all B*N masked copies of T, computed by the path chosen for this tail
   (:mod:`ovxai.hook.paths`: closed forms, windows, or the full mosaic);
2. the rest of the tail is copied onto them; outside inputs of the tail are repeated N times per image;
3. scores (B*N, K) -> (B, K, N) -> min-max per (image, class) -> (B, K, H, W) ``saliency_map``.

When the copies end at a global pool, the original path's pooled features are exposed too, as
``feature_vector`` (B, C), the name OpenVINO's Model API reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from ovxai.errors import OvxaiError
from ovxai.graph.ops import END, Ops
from ovxai.graph.view import SHAPE_OPS, GraphView, Kind, Node
from ovxai.hook.masks import mask_matrix
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import ClassAxis
from ovxai.hook.saliency import SaliencyHook
from ovxai.hook.tail import TailPlan

if TYPE_CHECKING:
    from ovxai.hook.paths import Choice

T = TypeVar("T")


class ReciproCamHook(SaliencyHook[T]):
    """Builds the saliency branch for one tail through ``ops``, with the copies of the chosen path."""

    def __init__(self, ops: Ops[T], graph: GraphView, tail: TailPlan, options: HookOptions, choice: Choice[Any]):
        self.choice = choice
        super().__init__(ops, graph, tail, options)
        self.values: dict[str, T] = {}  # original tensor name -> its counterpart for all B*N copies
        self.lazy: dict[str, Callable[[], T]] = {}

    @cached_property
    def channels(self) -> T:
        """C of T, a 1-element int64 tensor."""
        return self.ops.slice(self.t_shape, 1, 2)

    @cached_property
    def masks(self) -> T:
        """(N, N) in T's type: row n is position n's mask (:mod:`ovxai.hook.masks`)."""
        return mask_matrix(self.ops, self.w, self.n, self.options.mask, self.ops.dtype(self.tail.target))

    def build(self) -> T:
        """Emit the whole branch and return the saliency tensor (also exposed as ``saliency_map``)."""
        copies = self.choice.path.emit(self, self.choice.plan)
        self.values.update(copies.values)
        self.lazy.update(copies.lazy)
        if copies.scores is not None:
            saliency = self._saliency(copies.scores, class_axis=1)
        else:
            replaced = set(copies.replaced)
            classifier = self.classes.prunable(copies.replaced)
            if classifier is not None:
                replaced |= classifier.nodes
            self._copy_tail(replaced, copies.special)
            if classifier is None:
                saliency = self._saliency(self.values[self._logits()])
            else:
                rows = self.input(classifier.product.inputs[0])
                assert rows is not None
                saliency = self._saliency(self.classes.pruned_scores(classifier, rows), selected=True)
        self.outputs(saliency, copies.pool)
        return saliency

    def _copy_tail(self, replaced: set[str], special: Callable[[Node], list[T] | None] | None) -> None:
        for node in self.tail.nodes:
            if node.name in replaced:
                continue
            outs = special(node) if special is not None else None
            if outs is None and node.op in SHAPE_OPS and node.inputs[0] not in self.values | self.lazy:
                outs = [self._scaled_shape(node)]  # the shape of a tensor the path skipped, as B*N rows read it
            if outs is None:
                outs = self.ops.copy_node(node, [self.input(i) for i in node.inputs])
            self.values.update(zip(node.outputs, outs, strict=True))

    def copied(self, nodes: Sequence[Node], values: dict[str, T]) -> dict[str, T]:
        """Copies of a chain of nodes reading ``values`` for the tensors given there, the originals' otherwise."""
        for node in nodes:
            inputs = [values[i] if i in values else (self.ops.tensor(i) if i else None) for i in node.inputs]
            values.update(zip(node.outputs, self.ops.copy_node(node, inputs), strict=True))
        return values

    # -- inputs of the copied tail ----------------------------------------------------------------

    def input(self, name: str) -> T | None:
        """The counterpart for all copies of a tensor a copied node reads."""
        if not name:
            return None  # an omitted optional input
        if name not in self.values:
            if name in self.lazy:
                self.values[name] = self.lazy.pop(name)()
                return self.values[name]
            kind = self.graph.kind.get(name, Kind.CONSTANT)
            if kind is Kind.CONSTANT:
                return self.ops.tensor(name)
            self.values[name] = self._repeated(name) if kind is Kind.ACTIVATION else self._shape_input(name)
        return self.values[name]

    def _repeated(self, name: str) -> T:
        """An activation from before the target (a skip path): (B, ...) -> (B*N, ...), each image N times."""
        ops = self.ops
        rank = self.graph.tensor(name).rank
        assert rank is not None  # plan_tail refuses unknown ranks
        x = ops.tensor(name)
        tiled = ops.expand(ops.unsqueeze(x, 1), ops.concat([self.n, ops.i64([1] * (rank - 1))]))
        return ops.reshape(tiled, ops.concat([ops.i64([-1]), ops.slice(ops.shape(x), 1, rank)]))

    def _shape_input(self, name: str) -> T:
        """A value computed from activations' shapes (e.g. ``x.view(x.size(0), -1)``), seen by B*N rows."""
        node = self.graph.producer.get(name)
        if node is None:
            raise OvxaiError(f"cannot trace where '{name}' comes from", "re-export the model with shapes folded")
        if node.op in SHAPE_OPS:
            if self.graph.kind.get(node.inputs[0]) is Kind.SHAPE:
                return self.ops.tensor(name)  # the shape of a shape: a rank, independent of the batch
            return self._scaled_shape(node)
        outs = self.ops.copy_node(node, [self.input(i) for i in node.inputs])
        self.values.update(zip(node.outputs, outs, strict=True))
        return self.values[name]

    def _scaled_shape(self, node: Node) -> T:
        """Shape/Size of a batch-B tensor, as it would read on the B*N rows of the copies."""
        ops = self.ops
        original = ops.tensor(node.outputs[0])
        if node.op == "Size":
            return ops.binary("Mul", original, ops.reshape(self.n, ops.i64([])))
        start = node.start
        rank = self.graph.tensor(node.inputs[0]).rank
        if start < 0 and rank is not None:
            start += rank
        if start != 0:
            return original  # the batch dimension is not part of this shape
        head = ops.binary("Mul", ops.slice(original, 0, 1), self.n)
        return ops.concat([head, ops.slice(original, 1, END)])

    # -- scores to saliency -----------------------------------------------------------------------

    def _logits(self) -> str:
        """The tensor holding the class logits: a model that ends in Softmax or Sigmoid already turned them into
        probabilities, and scoring those again would flatten the map."""
        final = self.graph.producer.get(self.tail.prediction)
        if final is not None and final.op in ("Softmax", "Sigmoid") and final.inputs[0] in self.values:
            return final.inputs[0]
        return self.tail.prediction

    def _saliency(self, scores: T, selected: bool = False, class_axis: ClassAxis = 2) -> T:
        """(B*N, K...) rows of scores (``class_axis`` 2) or (B, K, N) class-major ones (1) -> (B, K, H, W) maps,
        min-max normalised per image and class; ``selected``: the scores are the selected classes' already."""
        ops = self.ops
        per_image = ops.cast(ops.reshape(scores, self.per_image(ops.i64([-1]), class_axis)), "float32")
        if self.options.score == "softmax":
            per_image = ops.softmax(per_image, class_axis)
        elif self.options.score == "sigmoid":
            per_image = ops.unary("Sigmoid", per_image)
        maps = per_image if selected else self.classes.scores(per_image, class_axis)
        if class_axis == 2:
            maps = ops.transpose(maps, [0, 2, 1])  # (B, K', N)
        return self.normalised(maps)
