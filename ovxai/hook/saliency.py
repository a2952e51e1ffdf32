"""What every method's hook shares, whatever computes the maps: the target's geometry, the class selection, the
normalisation and the outputs.

A method's hook emits (B, K', N) raw maps for the selected classes; this base min-max normalises them per image and
class, (L - min) / (max - min) with a constant map giving zeros (never NaN), lays them out as (B, K', H, W) and
exposes ``saliency_map``, ``saliency_classes`` (where ``explain`` picks classes) and ``feature_vector`` (where the
method ran through the tail's global pool).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ovxai.conventions import CLASSES_OUTPUT, FEATURE_OUTPUT, SALIENCY_OUTPUT
from ovxai.graph.ops import Ops
from ovxai.graph.view import Dim, GraphView, Node
from ovxai.hook.classes import ClassSelection
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import ClassAxis
from ovxai.hook.tail import TailPlan

T = TypeVar("T")


class SaliencyHook(Generic[T]):
    """The base of the Recipro-CAM and gradient hooks: ``build`` emits the branch and returns ``saliency_map``."""

    def __init__(self, ops: Ops[T], graph: GraphView, tail: TailPlan, options: HookOptions) -> None:
        self.ops, self.graph, self.tail, self.options = ops, graph, tail, options
        self.t = ops.tensor(tail.target)
        self.t_shape = ops.shape(self.t)
        self.batch = ops.slice(self.t_shape, 0, 1)
        self.h, self.w, self.n = self._geometry()
        self.classes: ClassSelection[T] = ClassSelection(self)

    def _geometry(self) -> tuple[T, T, T]:
        """H, W and N of the map, as 1-element int64 tensors read from T's runtime shape."""
        h, w = self.ops.slice(self.t_shape, 2, 3), self.ops.slice(self.t_shape, 3, 4)
        return h, w, self.ops.binary("Mul", h, w)

    def build(self) -> T:
        """Emit the whole branch and return the saliency tensor (also exposed as ``saliency_map``)."""
        raise NotImplementedError

    def per_image(self, classes: T, class_axis: ClassAxis) -> T:
        """The shape of one image's scores: (B, N, classes) rows or (B, classes, N) columns."""
        dims = [self.batch, self.n, classes] if class_axis == 2 else [self.batch, classes, self.n]
        return self.ops.concat(dims)

    def normalised(self, maps: T) -> T:
        """(B, K', N) raw float32 maps -> (B, K', H, W) in [0, 1] per image and class (uint8 0..255 if asked)."""
        ops = self.ops
        low = ops.reduce("ReduceMin", maps, 2)
        span = ops.binary("Sub", ops.reduce("ReduceMax", maps, 2), low)
        # A constant map has span 0 and maps - low == 0 everywhere: dividing by 1 gives zeros, not NaN.
        span = ops.where(ops.binary("Greater", span, ops.f32(0.0)), span, ops.f32(1.0))
        maps = ops.binary("Div", ops.binary("Sub", maps, low), span)
        maps = ops.reshape(maps, ops.concat([self.batch, ops.i64([-1]), self.h, self.w]))
        if self.options.saliency_dtype == "uint8":
            maps = ops.cast(ops.unary("Round", ops.binary("Mul", maps, ops.f32(255.0))), "uint8")
        return maps

    def map_size(self) -> tuple[Dim, Dim]:
        """H and W of the maps as the output declares them (names where they vary)."""
        target = self.graph.tensor(self.tail.target).shape or (None,) * 4
        return target[2] or "height", target[3] or "width"

    def outputs(self, saliency: T, pool: Node | None) -> None:
        """``saliency_map`` (B, K, H, W), ``saliency_classes`` (B, K') where explain picks classes, and
        ``feature_vector`` (B, C), the original path's pooled features, where the method ran through a global ``pool``
        (the embedding OpenVINO's Model API exposes)."""
        ops = self.ops
        prediction = self.graph.tensor(self.tail.prediction).shape or (None, None)
        batch = (self.graph.tensor(self.tail.target).shape or (None,))[0] or prediction[0] or "batch"
        count = self.classes.selection.count(prediction[1]) or "classes"
        ops.output(saliency, SALIENCY_OUTPUT, (batch, count, *self.map_size()))
        if self.classes.ids is not None:
            ops.output(self.classes.ids, CLASSES_OUTPUT, (batch, count))
        if pool is not None:
            channels = ops.slice(ops.shape(ops.tensor(pool.inputs[0])), 1, 2)
            features = ops.reshape(ops.tensor(pool.outputs[0]), ops.concat([self.batch, channels]))
            source = self.graph.tensor(pool.inputs[0]).shape or (None, None)
            ops.output(features, FEATURE_OUTPUT, (batch, source[1] or "channels"))
