"""Backward rules of the ops that only move values: a reshape's gradient is reshaped back, a transpose's transposed
back, a concatenation's split at its inputs' sizes, a split's concatenated (zeros for an unused part), a slice's
padded with zeros to the input's size."""

from __future__ import annotations

from typing import Any

import numpy as np

from ovxai.graph.view import GraphView, Node
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.rules.rule import Rule, one


def _reshape(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """Reshape, Flatten, Squeeze, Unsqueeze: the gradient in the input's shape."""
    return [flow.like(grads[0], node.inputs[0]), *[None] * (len(node.inputs) - 1)]


def _perm_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    return None if node.perm is not None else "its permutation is not a constant"


@one
def _transpose(flow: Flow[Any], node: Node, grad: Any) -> Any:
    assert node.perm is not None
    inverse = np.argsort(node.perm)
    return flow.ops.transpose(grad, [0, *(int(p) + 1 for p in inverse)])


def _axis_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    return None if node.axis is not None and node.axis >= 0 else "its axis is not known"


def _concat(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """G cut at the inputs' sizes along the axis (read at run time)."""
    ops = flow.ops
    assert node.axis is not None
    static = [flow.shape(x)[node.axis] for x in node.inputs]
    if all(isinstance(d, int) for d in static):
        sizes = ops.i64([int(d) for d in static])  # type: ignore[arg-type]
    else:
        sizes = ops.concat([ops.slice(ops.shape(flow.value(x)), node.axis, node.axis + 1) for x in node.inputs])
    parts = ops.split(grads[0], sizes, node.axis + 1, len(node.inputs))
    return [part if flow.needs(x) else None for part, x in zip(parts, node.inputs, strict=True)]


def _split(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """The outputs' gradients joined along the axis (zeros for an output nothing differentiable reads)."""
    assert node.axis is not None
    known = next(g for g in grads if g is not None)
    parts = [g if g is not None else flow.zeros(known, out) for g, out in zip(grads, node.outputs, strict=True)]
    return [flow.ops.concat(parts, node.axis + 1), *[None] * (len(node.inputs) - 1)]


def _slice_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    slicing = node.slicing
    if slicing is None:
        return "its bounds are not constants"
    if any(step != 1 for step in slicing.steps):
        return "it takes every n-th value (a step other than 1)"
    shape = graph.tensor(node.inputs[0]).shape
    if shape is None or any(not isinstance(shape[a], int) for a in slicing.axes if a < len(shape)):
        return "the size of a sliced axis is known only at run time"
    return None


@one
def _slice(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G padded with zeros before and after the slice, per sliced axis."""
    slicing = node.slicing
    assert slicing is not None
    shape = flow.shape(node.inputs[0])
    begins, ends = [0] * (len(shape) + 1), [0] * (len(shape) + 1)
    for axis, start, end in zip(slicing.axes, slicing.starts, slicing.ends, strict=True):
        size = shape[axis]
        assert isinstance(size, int)
        first = min(max(start + size if start < 0 else start, 0), size)
        last = min(max(end + size if end < 0 else end, first), size)
        begins[axis + 1], ends[axis + 1] = first, size - last
    return flow.ops.pad(grad, begins, ends)


RULES = {
    "Reshape": Rule(_reshape),
    "Flatten": Rule(_reshape),
    "Squeeze": Rule(_reshape),
    "Unsqueeze": Rule(_reshape),
    "Transpose": Rule(_transpose, _perm_refuses),
    "Concat": Rule(_concat, _axis_refuses),
    "Split": Rule(_split, _axis_refuses),
    "VariadicSplit": Rule(_split, _axis_refuses),
    "Slice": Rule(_slice, _slice_refuses),
}
