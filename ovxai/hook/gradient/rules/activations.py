"""Backward rules of activations, each the derivative of the function the graph computes (the kinks as torch takes
them: ReLU's 0 gets no gradient, Clip's and HardSigmoid's bounds none, HardSwish's [-3, 3] the inner slope), and of
the softmax. Where the derivative is a function of the output (ReLU, Clip, Sigmoid, Softmax) the output is read."""

from __future__ import annotations

import math
from typing import Any

from ovxai.graph.view import GraphView, Node
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.rules.rule import Rule, one


@one
def _relu(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G * [y > 0]."""
    ops, y = flow.ops, node.outputs[0]
    return ops.where(ops.binary("Greater", flow.value(y), flow.scalar(0.0, y)), grad, flow.scalar(0.0, y))


@one
def _leaky_relu(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G where y > 0, alpha G elsewhere."""
    ops, y = flow.ops, node.outputs[0]
    scaled = ops.binary("Mul", grad, flow.scalar(node.alpha, y))
    return ops.where(ops.binary("Greater", flow.value(y), flow.scalar(0.0, y)), grad, scaled)


@one
def _prelu(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G where x > 0, slope G elsewhere: the slope read as y / x, which holds however the format broadcasts it."""
    ops, x, y = flow.ops, node.inputs[0], node.outputs[0]
    value = flow.value(x)
    zero = flow.scalar(0.0, x)
    safe = ops.where(ops.binary("Equal", value, zero), flow.scalar(1.0, x), value)
    return ops.where(
        ops.binary("Greater", value, zero), grad, ops.binary("Mul", grad, ops.binary("Div", flow.value(y), safe))
    )


def _clip_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    return None if node.bounds is not None else "its bounds are not constants"


@one
def _clip(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G * [lo < y < hi] (ReLU6: lo 0, hi 6): y strictly inside the bounds exactly where x is."""
    ops, y = flow.ops, node.outputs[0]
    assert node.bounds is not None
    low, high = node.bounds
    value, zero = flow.value(y), flow.scalar(0.0, y)
    if math.isfinite(high):
        grad = ops.where(ops.binary("Greater", flow.scalar(high, y), value), grad, zero)
    if math.isfinite(low):
        grad = ops.where(ops.binary("Greater", value, flow.scalar(low, y)), grad, zero)
    return grad


@one
def _sigmoid(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G * y * (1 - y)."""
    ops, y = flow.ops, node.outputs[0]
    value = flow.value(y)
    return ops.binary("Mul", grad, ops.binary("Mul", value, ops.binary("Sub", flow.scalar(1.0, y), value)))


@one
def _hard_sigmoid(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = max(0, min(1, alpha x + beta)): G * alpha where 0 < y < 1."""
    ops, y = flow.ops, node.outputs[0]
    value, zero = flow.value(y), flow.scalar(0.0, y)
    inside = ops.where(
        ops.binary("Greater", flow.scalar(1.0, y), value), ops.binary("Mul", grad, flow.scalar(node.alpha, y)), zero
    )
    return ops.where(ops.binary("Greater", value, zero), inside, zero)


@one
def _hard_swish(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = x * relu6(x + 3) / 6: slope 0 below -3, x / 3 + 1/2 on [-3, 3], 1 above (torch's)."""
    ops, x = flow.ops, node.inputs[0]
    value = flow.value(x)
    inner = ops.binary("Add", ops.binary("Div", value, flow.scalar(3.0, x)), flow.scalar(0.5, x))
    slope = ops.where(ops.binary("Greater", value, flow.scalar(3.0, x)), flow.scalar(1.0, x), inner)
    slope = ops.where(ops.binary("Greater", flow.scalar(-3.0, x), value), flow.scalar(0.0, x), slope)
    return ops.binary("Mul", grad, slope)


@one
def _swish(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """OpenVINO's fused y = x sigmoid(beta x): G * (s + beta x s (1 - s)), s = sigmoid(beta x) (no tensor holds s:
    computed here)."""
    ops, x = flow.ops, node.inputs[0]
    value = flow.value(x)
    scaled = ops.binary("Mul", value, flow.scalar(node.beta, x))
    s = ops.unary("Sigmoid", scaled)
    slope = ops.binary(
        "Add", s, ops.binary("Mul", scaled, ops.binary("Mul", s, ops.binary("Sub", flow.scalar(1.0, x), s)))
    )
    return ops.binary("Mul", grad, slope)


_TANH_SCALE = math.sqrt(2 / math.pi)
_TANH_CUBIC = 0.044715


@one
def _gelu(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """The derivative of the form the graph computes: erf, Phi(x) + x phi(x); tanh, with t = tanh(u),
    u = sqrt(2 / pi) (x + 0.044715 x^3): (1 + t) / 2 + x (1 - t^2) sqrt(2 / pi) (1 + 3 0.044715 x^2) / 2."""
    ops, x = flow.ops, node.inputs[0]

    def mul(a: Any, b: Any) -> Any:
        return ops.binary("Mul", a, b)

    def add(a: Any, b: Any) -> Any:
        return ops.binary("Add", a, b)

    def c(v: float) -> Any:
        return flow.scalar(v, x)

    value = flow.value(x)
    square = mul(value, value)
    if node.approximate:
        t = ops.unary("Tanh", mul(add(value, mul(mul(square, value), c(_TANH_CUBIC))), c(_TANH_SCALE)))
        du = mul(add(c(1.0), mul(square, c(3 * _TANH_CUBIC))), c(_TANH_SCALE))
        slope = mul(add(add(c(1.0), t), mul(mul(value, ops.binary("Sub", c(1.0), mul(t, t))), du)), c(0.5))
    else:
        cdf = mul(add(c(1.0), ops.unary("Erf", mul(value, c(1 / math.sqrt(2))))), c(0.5))
        pdf = mul(ops.unary("Exp", mul(square, c(-0.5))), c(1 / math.sqrt(2 * math.pi)))
        slope = add(cdf, mul(value, pdf))
    return mul(grad, slope)


def _axis_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    return None if node.axis is not None and node.axis >= 0 else "its axis is not known"


@one
def _softmax(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """s = softmax(x): s * (G - sum(s * G)) over the class axis."""
    ops, y = flow.ops, flow.value(node.outputs[0])
    assert node.axis is not None
    total = ops.reduce("ReduceSum", ops.binary("Mul", y, grad), node.axis + 1)
    return ops.binary("Mul", y, ops.binary("Sub", grad, total))


@one
def _log_softmax(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = log softmax(x): G - exp(y) * sum(G)."""
    ops, y = flow.ops, flow.value(node.outputs[0])
    assert node.axis is not None
    total = ops.reduce("ReduceSum", grad, node.axis + 1)
    return ops.binary("Sub", grad, ops.binary("Mul", ops.unary("Exp", y), total))


RULES = {
    "Relu": Rule(_relu, broadcasts=True),
    "LeakyRelu": Rule(_leaky_relu, broadcasts=True),
    "PRelu": Rule(_prelu, broadcasts=True),
    "Clip": Rule(_clip, _clip_refuses, broadcasts=True),
    "Sigmoid": Rule(_sigmoid, broadcasts=True),
    "HardSigmoid": Rule(_hard_sigmoid, broadcasts=True),
    "HardSwish": Rule(_hard_swish, broadcasts=True),
    "Swish": Rule(_swish, broadcasts=True),
    "Gelu": Rule(_gelu, broadcasts=True),
    "Softmax": Rule(_softmax, _axis_refuses),
    "LogSoftmax": Rule(_log_softmax, _axis_refuses),
}
