"""Backward rules of the normalisations at inference: a BatchNorm is a per-channel affine map (G times
gamma / sqrt(var + eps)); a LayerNorm or OpenVINO's MVN normalises over its axes, y = (x - mean) / sigma, whose
gradient is (G - mean(G)) / sigma - (x - mean) mean(G (x - mean)) sigma' (sigma' = 1 / sigma^3 with the epsilon
under the root). The statistics are recomputed from x: no tensor of the forward holds them."""

from __future__ import annotations

from typing import Any

from ovxai.graph.view import GraphView, Node
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.rules.rule import Rule


def _batch_norm(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """y = gamma (x - mean) / sqrt(var + eps) + beta, per channel (axis 1)."""
    ops = flow.ops
    x, gamma, _, _, variance = node.inputs[:5]
    root = ops.unary("Sqrt", ops.binary("Add", flow.value(variance), flow.scalar(node.epsilon, x)))
    scale = ops.reshape(ops.binary("Div", flow.value(gamma), root), ops.i64([-1, *[1] * (flow.rank(x) - 2)]))
    return [ops.binary("Mul", grads[0], scale), *[None] * (len(node.inputs) - 1)]


def _normalised(
    flow: Flow[Any], grad: Any, x: str, axes: tuple[int, ...], eps: float, inside: bool, scale: bool
) -> Any:
    """The gradient of (x - mean) / sigma over ``axes`` (only the centring if not ``scale``); sigma is
    sqrt(var + eps) (``inside``) or sqrt(var) + eps."""
    ops = flow.ops
    grad_axes = [a + 1 for a in axes]
    centred_grad = ops.binary("Sub", grad, ops.reduce_axes("ReduceMean", grad, grad_axes))
    if not scale:
        return centred_grad
    value = flow.value(x)
    centred = ops.binary("Sub", value, ops.reduce_axes("ReduceMean", value, list(axes)))
    variance = ops.reduce_axes("ReduceMean", ops.binary("Mul", centred, centred), list(axes))
    epsilon = flow.scalar(eps, x)
    if inside:
        sigma = ops.unary("Sqrt", ops.binary("Add", variance, epsilon))
        slope = ops.binary("Mul", ops.binary("Mul", sigma, sigma), sigma)  # sigma^3
    else:
        root = ops.unary("Sqrt", variance)
        sigma = ops.binary("Add", root, epsilon)
        slope = ops.binary("Mul", root, ops.binary("Mul", sigma, sigma))  # sqrt(var) sigma^2
    projection = ops.reduce_axes("ReduceMean", ops.binary("Mul", grad, centred), grad_axes)
    return ops.binary(
        "Sub", ops.binary("Div", centred_grad, sigma), ops.binary("Div", ops.binary("Mul", centred, projection), slope)
    )


def _axes_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    if node.axes is None:
        return "its axes are not known"
    if any(i in active for i in node.inputs[1:]):
        return "its scale or bias depends on the target"
    return None


def _layer_norm(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """ONNX LayerNormalization: y = scale * normalised(x) + bias over the trailing axes."""
    assert node.axes is not None
    grad = flow.ops.binary("Mul", grads[0], flow.value(node.inputs[1]))
    to_x = _normalised(flow, grad, node.inputs[0], node.axes, node.epsilon, True, True)
    return [to_x, *[None] * (len(node.inputs) - 1)]


def _mvn(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """OpenVINO's MVN (a LayerNorm without its affine part) over its axes."""
    assert node.axes is not None
    to_x = _normalised(
        flow, grads[0], node.inputs[0], node.axes, node.epsilon, node.eps_inside, node.normalize_variance
    )
    return [to_x, *[None] * (len(node.inputs) - 1)]


RULES = {
    "BatchNormalization": Rule(_batch_norm, broadcasts=True),
    "LayerNormalization": Rule(_layer_norm, _axes_refuses),
    "MeanVarianceNormalization": Rule(_mvn, _axes_refuses),
}
