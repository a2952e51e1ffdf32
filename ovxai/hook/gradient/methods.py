"""The gradient CAMs that weight the target map A by its gradient g = dy_c / dA, one class per method (torchcam's
layout), each exactly as its paper and the reference implementation (pytorch-grad-cam) define it.

``map(flow, grads, target)`` takes g, (K', R, C, H, W) for K' selected classes, possibly still broadcast over
H, W (a global pool's gradient, never expanded when the formula does not need it: means are unchanged by the
broadcast, so every spatial sum is written N times a mean), and gives the ReLU'd map, (K', R, 1, H, W).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ovxai.conventions import Method
from ovxai.hook.gradient.flow import Flow

SPATIAL = [3, 4]  # H and W of a gradient (K', R, C, H, W)


class ChannelWeighted:
    """A CAM that weights each channel: L = ReLU(sum_k w_k A_k) for the weights ``weights`` gives."""

    name: ClassVar[Method]

    def weights(self, flow: Flow[Any], grads: Any, target: str) -> Any:
        """(K', R, C, 1, 1) channel weights."""
        raise NotImplementedError

    def map(self, flow: Flow[Any], grads: Any, target: str) -> Any:
        ops = flow.ops
        weighted = ops.binary("Mul", self.weights(flow, grads, target), flow.value(target))
        return ops.unary("Relu", ops.reduce("ReduceSum", weighted, 2))


class GradCAM(ChannelWeighted):
    """Grad-CAM (Selvaraju et al., ICCV 2017): each channel weighted by its gradient's spatial mean,

    w_k = (1 / N) sum_ij g_k(i, j),    L = ReLU(sum_k w_k A_k).
    """

    name = "gradcam"

    def weights(self, flow: Flow[Any], grads: Any, target: str) -> Any:
        return flow.ops.reduce_axes("ReduceMean", grads, SPATIAL)


class XGradCAM(ChannelWeighted):
    """XGrad-CAM (Fu et al., BMVC 2020): the gradient averaged with the activations as weights, which makes the
    map satisfy its sensitivity and conservation axioms,

        w_k = sum_ij g_k(i, j) A_k(i, j) / (sum_ab A_k(a, b) + eps),    eps = 1e-7 (pytorch-grad-cam's).
    """

    name = "xgradcam"
    eps = 1e-7

    def weights(self, flow: Flow[Any], grads: Any, target: str) -> Any:
        ops, acts = flow.ops, flow.value(target)
        weighted = ops.reduce_axes("ReduceSum", ops.binary("Mul", grads, acts), SPATIAL)
        total = ops.binary("Add", ops.reduce_axes("ReduceSum", acts, [2, 3]), flow.scalar(self.eps, target))
        return ops.binary("Div", weighted, total)


class GradCAMPlusPlus(ChannelWeighted):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018), eq. 19 with the exponential score's identities (the second and
    third derivatives are powers of the first), as the paper and pytorch-grad-cam compute it:

        alpha_k(i, j) = g^2 / (2 g^2 + (sum_ab A_k(a, b)) g^3 + eps), 0 where g = 0,    eps = 1e-6,
        w_k = sum_ij alpha_k(i, j) ReLU(g_k(i, j)),    L = ReLU(sum_k w_k A_k).

    (torchcam's ``GradCAMpp`` sums A g^3 in the denominator instead, and its maps differ.)"""

    name = "gradcam++"
    eps = 1e-6

    def weights(self, flow: Flow[Any], grads: Any, target: str) -> Any:
        ops, acts = flow.ops, flow.value(target)
        square = ops.binary("Mul", grads, grads)
        cube = ops.binary("Mul", square, grads)
        total = ops.reduce_axes("ReduceSum", acts, [2, 3])  # (R, C, 1, 1)
        twice = ops.binary("Mul", square, flow.scalar(2.0, target))
        denominator = ops.binary(
            "Add", ops.binary("Add", twice, ops.binary("Mul", total, cube)), flow.scalar(self.eps, target)
        )
        zero = flow.scalar(0.0, target)
        alpha = ops.where(ops.binary("Equal", grads, zero), zero, ops.binary("Div", square, denominator))
        positions = ops.cast(ops.binary("Mul", ops.slice(ops.shape(acts), 2, 3), ops.slice(ops.shape(acts), 3, 4)),
                             ops.dtype(target))  # fmt: skip
        mean = ops.reduce_axes("ReduceMean", ops.binary("Mul", alpha, ops.unary("Relu", grads)), SPATIAL)
        return ops.binary("Mul", mean, positions)


class LayerCAM:
    """LayerCAM (Jiang et al., IEEE TIP 2021): every position weighted by its own positive gradient,

    L = ReLU(sum_k ReLU(g_k) * A_k).
    """

    name: ClassVar[Method] = "layercam"

    def map(self, flow: Flow[Any], grads: Any, target: str) -> Any:
        ops = flow.ops
        weighted = ops.binary("Mul", ops.unary("Relu", grads), flow.value(target))
        return ops.unary("Relu", ops.reduce("ReduceSum", weighted, 2))


METHODS: dict[str, GradCAM | XGradCAM | GradCAMPlusPlus | LayerCAM] = {
    m.name: m for m in (GradCAM(), XGradCAM(), GradCAMPlusPlus(), LayerCAM())
}
