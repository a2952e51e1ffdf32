"""Backward rules of the quantisers: straight-through (the rounding has no gradient worth following), the gradient
passing where the input lies inside the quantiser's range and stopping where it saturates, as quantisation-aware
training takes it."""

from __future__ import annotations

from typing import Any

from ovxai.graph.view import GraphView, Node
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.rules.rule import Rule, one


def _inside(flow: Flow[Any], grad: Any, x: str, low: Any, high: Any) -> Any:
    """G where low <= x <= high, 0 elsewhere."""
    ops, value, zero = flow.ops, flow.value(x), flow.scalar(0.0, x)
    grad = ops.where(ops.binary("Greater", value, high), zero, grad)
    return ops.where(ops.binary("Greater", low, value), zero, grad)


def _fake_quantize(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """OpenVINO's FakeQuantize: G (out_high - out_low) / (in_high - in_low) inside [in_low, in_high]."""
    ops = flow.ops
    x, in_low, in_high, out_low, out_high = node.inputs[:5]
    grad = _inside(flow, grads[0], x, flow.value(in_low), flow.value(in_high))
    ratio = ops.binary(
        "Div",
        ops.binary("Sub", flow.value(out_high), flow.value(out_low)),
        ops.binary("Sub", flow.value(in_high), flow.value(in_low)),
    )
    return [ops.binary("Mul", grad, ratio), *[None] * (len(node.inputs) - 1)]


_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


def _quantize_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    point = graph.tensor(node.inputs[2]).dtype if len(node.inputs) > 2 and node.inputs[2] else "uint8"
    if point not in _RANGES:
        return f"its integer type ({point}) is not one of {', '.join(_RANGES)}"
    return None


@one
def _quantize(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """QuantizeLinear q = saturate(round(x / s) + z): G inside [(q_min - z) s, (q_max - z) s] (per axis where the
    scale is a vector); the DequantizeLinear after it passes G on unchanged."""
    ops, x = flow.ops, node.inputs[0]
    point = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    q_min, q_max = _RANGES[(flow.graph.tensor(point).dtype if point else None) or "uint8"]
    scale = flow.value(node.inputs[1])
    zero = ops.cast(flow.value(point), ops.dtype(x)) if point else flow.scalar(0.0, x)
    bounds = [ops.binary("Mul", ops.binary("Sub", flow.scalar(q, x), zero), scale) for q in (q_min, q_max)]
    if len(flow.shape(node.inputs[1])) == 1 and flow.shape(node.inputs[1])[0] != 1:
        axis = node.axis if node.axis is not None else 1
        per_axis = ops.i64([-1, *[1] * (flow.rank(x) - 1 - axis)])
        bounds = [ops.reshape(b, per_axis) for b in bounds]
    return _inside(flow, grad, x, bounds[0], bounds[1])


def _dequantize_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    source = graph.producer.get(node.inputs[0])
    return None if source is not None and source.op == "QuantizeLinear" else "its input is not quantised in the graph"


def _dequantize(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    return [grads[0], *[None] * (len(node.inputs) - 1)]


RULES = {
    "FakeQuantize": Rule(_fake_quantize, broadcasts=True),
    "QuantizeLinear": Rule(_quantize, _quantize_refuses, broadcasts=True),
    "DequantizeLinear": Rule(_dequantize, _dequantize_refuses, broadcasts=True),
}
