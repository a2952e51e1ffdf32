"""Backward rules of element-wise arithmetic: sums, products, quotients and powers, with numpy broadcasting (an input
broadcast in the forward gets its gradient summed back over the broadcast axes: squeeze-excitation's scale)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ovxai.graph.view import GraphView, Node
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.rules.rule import Rule, one


def _add(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """y = a + b (a - b): the gradient to both, summed back where an input was broadcast (negated for b of Sub)."""
    out = node.outputs[0]
    result: list[Any] = []
    for k, x in enumerate(node.inputs):
        if not flow.needs(x):
            result.append(None)
            continue
        grad = grads[0] if node.op == "Add" or k == 0 else flow.ops.unary("Neg", grads[0])
        result.append(flow.unbroadcast(grad, x, out))
    return result


def _mul(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """y = a * b: G * b to a, G * a to b (the product rule; x * sigmoid(x) gets both terms)."""
    a, b = node.inputs
    out = node.outputs[0]
    ops = flow.ops
    return [
        flow.unbroadcast(ops.binary("Mul", grads[0], flow.value(other)), x, out) if flow.needs(x) else None
        for x, other in ((a, b), (b, a))
    ]


def _div(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """y = a / b: G / b to a, -G * y / b to b."""
    a, b = node.inputs
    out = node.outputs[0]
    ops = flow.ops
    quotient = ops.binary("Div", grads[0], flow.value(b))
    to_a = flow.unbroadcast(quotient, a, out) if flow.needs(a) else None
    to_b = None
    if flow.needs(b):
        to_b = flow.unbroadcast(ops.unary("Neg", ops.binary("Mul", quotient, flow.value(out))), b, out)
    return [to_a, to_b]


def _exponent(graph: GraphView, node: Node) -> float | None:
    value = graph.values.get(node.inputs[1])
    return None if value is None or np.asarray(value).size != 1 else float(np.asarray(value).reshape(-1)[0])


def _pow_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    return None if _exponent(graph, node) is not None else "its exponent is not a constant scalar"


@one
def _pow(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = x ** p, p constant: G * p * x ** (p - 1)."""
    ops, x = flow.ops, node.inputs[0]
    p = _exponent(flow.graph, node)
    assert p is not None
    if p == 2.0:
        slope = ops.binary("Mul", flow.value(x), flow.scalar(2.0, x))
    else:
        slope = ops.binary("Mul", ops.binary("Pow", flow.value(x), flow.scalar(p - 1, x)), flow.scalar(p, x))
    return ops.binary("Mul", grad, slope)


@one
def _sqrt(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = sqrt(x): G / (2 y)."""
    return flow.ops.binary(
        "Div", grad, flow.ops.binary("Mul", flow.value(node.outputs[0]), flow.scalar(2.0, node.inputs[0]))
    )


@one
def _exp(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = exp(x): G * y."""
    return flow.ops.binary("Mul", grad, flow.value(node.outputs[0]))


@one
def _tanh(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = tanh(x): G * (1 - y^2)."""
    ops, y = flow.ops, flow.value(node.outputs[0])
    return ops.binary("Mul", grad, ops.binary("Sub", flow.scalar(1.0, node.inputs[0]), ops.binary("Mul", y, y)))


@one
def _erf(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """y = erf(x): G * 2 / sqrt(pi) * exp(-x^2)."""
    ops, x = flow.ops, flow.value(node.inputs[0])
    density = ops.unary("Exp", ops.unary("Neg", ops.binary("Mul", x, x)))
    return ops.binary("Mul", grad, ops.binary("Mul", density, flow.scalar(2 / math.sqrt(math.pi), node.inputs[0])))


@one
def _neg(flow: Flow[Any], node: Node, grad: Any) -> Any:
    return flow.ops.unary("Neg", grad)


@one
def _identity(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """Identity, inference Dropout: the gradient passes."""
    return grad


@one
def _cast(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """A float conversion: the gradient converted back to the input's type."""
    return flow.ops.cast(grad, flow.ops.dtype(node.inputs[0]))


def _dropout(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    return [grads[0], *[None] * (len(node.inputs) - 1)]


RULES = {
    "Add": Rule(_add),
    "Sub": Rule(_add),
    "Mul": Rule(_mul),
    "Div": Rule(_div),
    "Pow": Rule(_pow, _pow_refuses, broadcasts=True),
    "Sqrt": Rule(_sqrt, broadcasts=True),
    "Exp": Rule(_exp, broadcasts=True),
    "Tanh": Rule(_tanh, broadcasts=True),
    "Erf": Rule(_erf, broadcasts=True),
    "Neg": Rule(_neg, broadcasts=True),
    "Identity": Rule(_identity, broadcasts=True),
    "Dropout": Rule(_dropout, broadcasts=True),
    "Cast": Rule(_cast, broadcasts=True),
}
