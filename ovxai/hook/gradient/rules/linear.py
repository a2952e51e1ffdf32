"""Backward rules of the products: a linear layer's input gets G times its weight; a convolution's input gets the
transposed convolution of G with the same weights, strides, padding, dilations and groups, the output padding
chosen so that it has the input's size (cropped where the size is known only at run time)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ovxai.graph.view import GraphView, Node, Sliding
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.rules.rule import Rule


def _swap(rank: int) -> list[int]:
    """The permutation that swaps the last two of ``rank`` axes."""
    return [*range(rank - 2), rank - 1, rank - 2]


def _gemm_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    if node.transpose_a:
        return "it transposes its input (transA)"
    if node.inputs[1] in active:
        return "its weight depends on the target"
    return None


def _gemm(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """y = alpha x W' + beta c (W' = W^T with transB): x gets alpha G W'^T; a bias from the target gets beta G."""
    ops, grad = flow.ops, grads[0]
    x, w = node.inputs[:2]
    weight = flow.value(w)
    to_x = ops.matmul(grad, weight if node.transpose_b else ops.transpose(weight, [1, 0]))
    if node.alpha != 1.0:
        to_x = ops.binary("Mul", to_x, flow.scalar(node.alpha, x))
    result: list[Any] = [to_x if flow.needs(x) else None, None]
    if len(node.inputs) > 2:
        bias = node.inputs[2]
        to_bias = None
        if bias and flow.needs(bias):
            to_bias = flow.unbroadcast(ops.binary("Mul", grad, flow.scalar(node.beta, bias)), bias, node.outputs[0])
        result.append(to_bias)
    return result


def _matmul_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    ranks = [graph.tensor(i).rank for i in node.inputs]
    if any(r is None or r < 2 for r in ranks):
        return "an operand is a vector or of unknown rank"
    return None


def _matmul(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """y = A B with A = a or a^T, B = b or b^T (OpenVINO's transpose flags): a gets G B^T, b gets A^T G (attention:
    both), each summed back over the batch axes its operand was broadcast on."""
    ops, grad = flow.ops, grads[0]
    a, b = node.inputs
    out = node.outputs[0]
    result: list[Any] = [None, None]
    if flow.needs(a):
        b_t = flow.value(b) if node.transpose_b else flow.swapped(b)  # B^T
        to_a = ops.matmul(grad, b_t)
        if node.transpose_a:
            to_a = ops.transpose(to_a, _swap(flow.rank(out) + 1))
        result[0] = flow.unbroadcast(to_a, a, out, matrix=True)
    if flow.needs(b):
        a_t = flow.value(a) if node.transpose_a else flow.swapped(a)  # A^T
        to_b = ops.matmul(a_t, grad)
        if node.transpose_b:
            to_b = ops.transpose(to_b, _swap(flow.rank(out) + 1))
        result[1] = flow.unbroadcast(to_b, b, out, matrix=True)
    return result


def transposed(flow: Flow[Any], grad: Any, weight: Any, groups: int, window: Sliding, x: str, y: str) -> Any:
    """The gradient (K', R, C_out, Ho, Wo) of a sliding-window op's output ``y`` carried to its input ``x``
    (K', R, C_in, H, W) by the transposed convolution with ``weight`` (C_out, C_in / groups, kh, kw)."""
    ops = flow.ops
    rows = flow.rows(grad)
    sizes = [d for d in (*flow.shape(x)[2:4], *flow.shape(y)[2:4]) if isinstance(d, int)]
    if len(sizes) == 4:
        h, w, ho, wo = sizes
        extra = [
            size - ((out - 1) * window.strides[k] + window.dilations[k] * (window.kernel[k] - 1) + 1)
            + window.pads[k] + window.ends[k]
            for k, (size, out) in enumerate(((h, ho), (w, wo)))
        ]  # fmt: skip
        return flow.unrows(ops.conv_transpose(rows, weight, groups, window, extra), x, grad)
    # Sizes known only at run time: the longest output any input size gives, cropped to the input's.
    open_end = Sliding(window.kernel, window.strides, window.pads, window.dilations, (0, 0))
    longest = ops.conv_transpose(rows, weight, groups, open_end, [s - 1 for s in window.strides])
    size = ops.slice(ops.shape(flow.value(x)), 2, 4)
    return flow.unrows(ops.crop(longest, ops.i64([0, 0]), size, [2, 3]), x, grad)


def _conv_refuses(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    if node.sliding is None:
        return "it is not a 2-D convolution with a known kernel"
    if node.groups < 1:
        return "its number of groups is unknown"
    if node.inputs[1] in active:
        return "its weight depends on the target"
    return None


def _conv(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
    """The transposed convolution with the same weight, (O, I / g, kh, kw) (OpenVINO's grouped (g, O / g, I / g, kh,
    kw) the same values). Stride 1: the equal convolution with the weight's in and out channels swapped and its
    kernel flipped, padded d (k - 1) - p (a plain convolution kernel, faster in both engines). Strided: the transposed
    convolution of -G with -W. Neither reads the forward's weight constant as is: OpenVINO's CPU plugin (2026.4)
    computes a transposed convolution wrong when it shares its weight constant with a convolution."""
    ops, grad = flow.ops, grads[0]
    x, w = node.inputs[:2]
    window = node.sliding
    assert window is not None
    shape = [int(d) for d in flow.shape(w)]  # type: ignore[arg-type]
    per_in, kh, kw = shape[-3:]
    outs = int(np.prod(shape[:-3]))
    groups = node.groups
    weight = ops.reshape(flow.value(w), ops.i64([outs, per_in, kh, kw])) if len(shape) == 5 else flow.value(w)
    reach = [d * (k - 1) for d, k in zip(window.dilations, window.kernel, strict=True)]
    pads = [r - p for r, p in zip(reach, window.pads, strict=True)]
    ends = [r - e for r, e in zip(reach, window.ends, strict=True)]
    if window.strides == (1, 1) and min(*pads, *ends) >= 0:
        swapped = ops.reshape(
            ops.transpose(ops.reshape(weight, ops.i64([groups, outs // groups, per_in, kh, kw])), [0, 2, 1, 3, 4]),
            ops.i64([groups * per_in, outs // groups, kh, kw]),
        )  # fmt: skip
        flipped = ops.gather(
            ops.gather(swapped, ops.i64(list(range(kh - 1, -1, -1))), 2), ops.i64(list(range(kw - 1, -1, -1))), 3
        )
        back = Sliding(window.kernel, (1, 1), (pads[0], pads[1]), window.dilations, (ends[0], ends[1]))
        to_x = flow.unrows(ops.conv(flow.rows(grad), flipped, groups, back), x, grad)
    else:
        negated = ops.unary("Neg", weight)
        to_x = transposed(flow, ops.unary("Neg", grad), negated, groups, window, x, node.outputs[0])
    return [to_x, *[None] * (len(node.inputs) - 1)]


RULES = {
    "Gemm": Rule(_gemm, _gemm_refuses),
    "MatMul": Rule(_matmul, _matmul_refuses),
    "Conv": Rule(_conv, _conv_refuses),
}
