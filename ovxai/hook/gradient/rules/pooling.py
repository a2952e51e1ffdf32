"""Backward rules of the pools and reductions: an average spreads G / (window size) over its window (a global one
without expanding: the gradient stays broadcast over H, W until a rule needs it whole), a max pool routes G to the
argmax of each window (the first of equal maxima, as torch), read from the pool's own indices."""

from __future__ import annotations

from typing import Any

import numpy as np

from ovxai.graph.numpy_ops import pooled_size
from ovxai.graph.view import GraphView, Node, Pooling
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.rules.linear import transposed
from ovxai.hook.gradient.rules.rule import Rule, one


def _count(flow: Flow[Any], x: str, axes: tuple[int, ...]) -> Any:
    """The number of values reduced over ``axes`` of ``x``, in x's type (static where the view knows it)."""
    ops = flow.ops
    dims = [flow.shape(x)[axis] for axis in axes]
    if all(isinstance(d, int) for d in dims):
        return flow.scalar(float(np.prod(dims)), x)  # type: ignore[arg-type]
    shape = ops.shape(flow.value(x))
    total = None
    for axis in axes:
        dim = ops.slice(shape, axis, axis + 1)
        total = dim if total is None else ops.binary("Mul", total, dim)
    assert total is not None
    return ops.cast(total, ops.dtype(x))


def _per_row(flow: Flow[Any], x: str) -> Any:
    """C H W of ``x`` (its size per batch row), 1-D int64."""
    ops = flow.ops
    dims = flow.shape(x)[1:]
    if all(isinstance(d, int) for d in dims):
        return ops.i64([int(np.prod(dims))])  # type: ignore[arg-type]
    shape = ops.shape(flow.value(x))
    total = ops.slice(shape, 1, 2)
    for axis in range(2, len(dims) + 1):
        total = ops.binary("Mul", total, ops.slice(shape, axis, axis + 1))
    return total


@one
def _global_average(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G / (H W), left broadcast over H, W."""
    x = node.inputs[0]
    return flow.ops.binary("Div", grad, _count(flow, x, tuple(range(2, flow.rank(x)))))


def _reduce_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    return None if node.axes is not None else "its axes are not constants"


def _reduce(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """ReduceMean / ReduceSum: G (divided by the count for a mean) with the reduced axes back as 1s, left broadcast."""
    ops, grad, x = flow.ops, grads[0], node.inputs[0]
    assert node.axes is not None
    if node.axes:
        if not node.keepdims:
            for axis in sorted(node.axes):
                grad = ops.unsqueeze(grad, axis + 1)
        if node.op == "ReduceMean":
            grad = ops.binary("Div", grad, _count(flow, x, node.axes))
    return [grad, *[None] * (len(node.inputs) - 1)]


def _average_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    if node.whole_window:
        return None
    pool = node.pool
    if pool is None:
        return "it is not a 2-D pool"
    shape = graph.tensor(node.inputs[0]).shape or ()
    sizes = shape[2:4]
    static = len(sizes) == 2 and all(isinstance(d, int) for d in sizes)
    if not isinstance(shape[1] if len(shape) > 1 else None, int):
        return "its number of channels is unknown"
    if pool.ceil and (not static or any(pooled_size(d, pool, k) != _floor(d, pool, k) for k, d in enumerate(sizes))):  # type: ignore[arg-type]
        return "its ceil_mode adds windows that are cut at the border"
    if not pool.counts_pads and any(pool.window.pads + pool.window.ends) and not static:
        return "it excludes the padding from its divisor on an image size known only at run time"
    return None


def _floor(size: int, pool: Pooling, axis: int) -> int:
    return pooled_size(size, Pooling(pool.window, False, pool.counts_pads), axis)


def _divisors(pool: Pooling, h: int, w: int) -> np.ndarray:
    """(Ho, Wo): how many input positions each window averages when the padding does not count."""
    sizes = []
    for axis, size in enumerate((h, w)):
        win = pool.window
        starts = np.arange(_floor(size, pool, axis)) * win.strides[axis] - win.pads[axis]
        taps = starts[:, None] + np.arange(win.kernel[axis])[None, :] * win.dilations[axis]
        sizes.append(((taps >= 0) & (taps < size)).sum(axis=1))
    return np.outer(sizes[0], sizes[1]).astype(np.float32)


@one
def _average(flow: Flow[Any], node: Node, grad: Any) -> Any:
    """G divided by each window's size, spread back over the window: the transposed depthwise convolution with a
    kernel of ones."""
    if node.whole_window:
        return _global_average(flow, node, [grad])[0]
    ops, x, y = flow.ops, node.inputs[0], node.outputs[0]
    pool = node.pool
    assert pool is not None
    channels, h, w = (int(d) for d in flow.shape(x)[1:4])  # type: ignore[arg-type]
    window = pool.window
    if pool.counts_pads or not any(window.pads + window.ends):
        divisor = flow.scalar(float(window.kernel[0] * window.kernel[1]), x)
    else:
        divisor = ops.cast(ops.f32(_divisors(pool, h, w)), ops.dtype(x))
    ones = ops.cast(ops.f32(np.ones((channels, 1, *window.kernel), np.float32)), ops.dtype(x))
    return transposed(flow, ops.binary("Div", grad, divisor), ones, channels, window, x, y)


def _max_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    return None if node.pool is not None else "it is not a 2-D pool"


def _max(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """G added at each window's argmax (an input position that wins several windows gets all their gradients)."""
    ops, x = flow.ops, node.inputs[0]
    grad = grads[0]
    classes = ops.slice(ops.shape(grad), 0, 1)
    flat = ops.reshape(grad, ops.concat([classes, ops.i64([-1])]))
    where = ops.expand(ops.reshape(flow.indices(node), ops.i64([1, -1])), ops.shape(flat))
    size = ops.binary("Mul", ops.slice(ops.shape(grad), 1, 2), _per_row(flow, x))  # R C H W
    zeros = ops.expand(flow.scalar(0.0, x), ops.concat([classes, size]))
    return [flow.like(ops.scatter_add(zeros, where, flat, 1), x)]


RULES = {
    "GlobalAveragePool": Rule(_global_average, compacts=True),
    "ReduceMean": Rule(_reduce, _reduce_refuses, compacts=True),
    "ReduceSum": Rule(_reduce, _reduce_refuses, compacts=True),
    "AveragePool": Rule(_average, _average_refuses, compacts=True),
    "MaxPool": Rule(_max, _max_refuses),
}
