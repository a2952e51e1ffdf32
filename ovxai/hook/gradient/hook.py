"""The gradient hook: a gradient CAM computed inside the exported graph.

The backward of the tail, target to class logits, is emitted as forward ops of the format (a rule per op,
:mod:`~ovxai.hook.gradient.rules`), for the selected classes only: the gradient of every tail tensor is laid out
(K', B, ...), one slice per selected class, and its rules read the original path's forward tensors (private
copies of them under export: :mod:`~ovxai.hook.private_reads`). The method
(:mod:`~ovxai.hook.gradient.methods`, :mod:`~ovxai.hook.gradient.integrated`) then weights the target map by the
gradient, and the shared base normalises the (B, K', H, W) maps and exposes them.

The differentiated quantity is the class ``score``: the logit (the papers' choice, the default), its softmax
probability or its sigmoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from ovxai.graph.ops import Ops
from ovxai.graph.view import GraphView
from ovxai.hook.gradient.backward import BackwardPlan, backward, plan_backward
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.integrated import integrated_map, network_copy, scaled_images
from ovxai.hook.gradient.methods import METHODS
from ovxai.hook.options import HookOptions
from ovxai.hook.saliency import SaliencyHook
from ovxai.hook.tail import TailPlan, tail_logits

T = TypeVar("T")


def plan_gradient(graph: GraphView, tail: TailPlan, options: HookOptions) -> BackwardPlan:
    """The backward this method needs, or the one-line refusal of the op it cannot differentiate."""
    return plan_backward(graph, tail, tail_logits(graph, tail), options.method)


class GradientCamHook(SaliencyHook[T]):
    """Builds a gradient CAM's saliency branch for one tail; ``baseline``: Integrated Grad-CAM's black image in the
    network's input (per channel)."""

    def __init__(
        self, ops: Ops[T], graph: GraphView, tail: TailPlan, options: HookOptions, baseline: Sequence[float] = (0.0,)
    ) -> None:
        super().__init__(ops, graph, tail, options)
        self.plan = plan_gradient(graph, tail, options)
        self.baseline = tuple(baseline)

    def build(self) -> T:
        ops, target = self.ops, self.tail.target
        if self.options.method == "integrated-gradcam":
            steps = self.options.step_count
            image = self.graph.image_input()
            rows, black = scaled_images(ops, ops.tensor(image), self.baseline, steps, ops.dtype(image))
            copies = network_copy(ops, self.graph, image, rows, self.plan.logits)
            black_map = network_copy(ops, self.graph, image, black, target)[target]
            flow = Flow(ops, self.graph, self.plan.active, copies)
            grads = backward(flow, self.plan, self.seed(flow, steps))
            maps = integrated_map(ops, grads, copies[target], black_map, steps, self.batch, self.n)
        else:
            flow = Flow(ops, self.graph, self.plan.active)
            grads = backward(flow, self.plan, self.seed(flow, 1))
            maps = METHODS[self.options.method].map(flow, grads, target)
        per_class = ops.cast(ops.reshape(maps, ops.concat([ops.i64([-1]), self.batch, self.n])), "float32")
        saliency = self.normalised(ops.transpose(per_class, [1, 0, 2]))  # (B, K', N)
        self.outputs(saliency, None)
        return saliency

    def seed(self, flow: Flow[T], steps: int) -> T:
        """d score / d logits for the selected classes, (K', R, classes...), R = steps * B rows (steps major). The
        logits' value is read only where the score needs it (softmax, sigmoid)."""
        ops, logits = self.ops, self.plan.logits
        rows = self.batch if steps == 1 else ops.binary("Mul", self.batch, ops.i64([steps]))
        dims = flow.shape(logits)[1:]
        if all(isinstance(d, int) for d in dims):
            classes = ops.i64([int(np.prod(dims))])  # type: ignore[arg-type]
        else:
            classes = ops.slice(ops.shape(ops.reshape(flow.value(logits), ops.concat([rows, ops.i64([-1])]))), 1, 2)
        every = ops.arange(classes)
        selection = self.classes.selection
        if selection.top is not None:  # (K', B) by each image's own prediction, repeated for every step
            ids = ops.unsqueeze(ops.transpose(self.classes.chosen(), [1, 0]), 2)
            if steps > 1:
                ids = ops.expand(ops.unsqueeze(ids, 1), ops.i64([1, steps, 1, 1]))
                ids = ops.reshape(ids, ops.i64([selection.top, -1, 1]))
        elif selection.ids is not None:
            ids = ops.reshape(ops.i64(list(selection.ids)), ops.i64([-1, 1, 1]))
        else:
            ids = ops.reshape(every, ops.i64([-1, 1, 1]))
        onehot = ops.cast(ops.binary("Equal", ids, every), ops.dtype(logits))  # (K', R or 1, classes)
        if self.options.score != "logits":
            scores = ops.reshape(flow.value(logits), ops.concat([rows, ops.i64([-1])]))  # (R, classes)
            if self.options.score == "softmax":
                probabilities = self._probabilities(flow, scores)
                chosen = ops.reduce("ReduceSum", ops.binary("Mul", probabilities, onehot), 2)
                onehot = ops.binary("Mul", probabilities, ops.binary("Sub", onehot, chosen))
            else:
                sigmoid = ops.unary("Sigmoid", scores)
                slope = ops.binary("Mul", sigmoid, ops.binary("Sub", flow.scalar(1.0, logits), sigmoid))
                onehot = ops.binary("Mul", onehot, slope)
        return flow.like(ops.expand(onehot, ops.concat([ops.i64([1]), rows, classes])), logits)

    def _probabilities(self, flow: Flow[T], scores: T) -> T:
        """The softmax of the logits: the model's own output where it ends in that softmax."""
        final = self.graph.producer.get(self.tail.prediction)
        own = flow.copies is None or self.tail.prediction in flow.copies
        if (
            own
            and final is not None
            and final.op == "Softmax"
            and final.inputs[0] == self.plan.logits
            and final.axis == 1
        ):
            value = flow.value(self.tail.prediction)
            return self.ops.reshape(value, self.ops.shape(scores))
        return self.ops.softmax(scores, 1)
