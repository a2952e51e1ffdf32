"""An eager numpy :class:`~ovxai.graph.ops.Builder`: every handle is an array, every node runs when it is made.

The hook's emission can then be checked on small random tensors in milliseconds, path by path against the
mosaic, with no engine and no torch. The original model's own nodes (the tail the hook copies) run through
``run_node``, which a format adapter provides (the ONNX adapter's runs ONNX's reference implementation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ovxai.graph.view import Dim, GraphView, Node, Pooling

RunNode = Callable[[Node, Sequence[np.ndarray | None], bool], list[np.ndarray]]
"""Run an original node on arrays: (node, inputs (None: omitted), unpadded) -> its outputs."""


class NumpyBuilder:
    """:class:`~ovxai.graph.ops.Builder` over numpy arrays. ``values`` holds every original tensor's value
    (see :func:`evaluate`); ``finish`` gives the model's outputs, the hook's and the original ones (recomputed
    where the hook replaced a tensor)."""

    def __init__(self, graph: GraphView, values: Mapping[str, np.ndarray], run_node: RunNode) -> None:
        self.graph, self.values, self.run_node = graph, dict(values), run_node
        self.replaced: dict[str, np.ndarray] = {}
        self.outputs: dict[str, np.ndarray] = {}

    def node(self, op: str, inputs: Sequence[np.ndarray], outputs: int = 1, **attrs: Any) -> list[np.ndarray]:
        result = _OPS[op](list(inputs), attrs)
        return (list(result) if isinstance(result, tuple) else [result])[:outputs]

    def constant(self, value: np.ndarray) -> np.ndarray:
        return np.array(value)

    def tensor(self, name: str) -> np.ndarray:
        return self.values[name]

    def dtype(self, name: str) -> str:
        return str(self.values[name].dtype.name)

    def stored(self, name: str) -> tuple[np.ndarray, str | None] | None:
        return (self.values[name], None) if name in self.graph.constants else None

    def replace(self, name: str, x: np.ndarray) -> None:
        self.replaced[name] = x

    def copy_node(self, node: Node, inputs: Sequence[np.ndarray | None], unpadded: bool = False) -> list[np.ndarray]:
        return self.run_node(node, inputs, unpadded)

    def output(self, x: np.ndarray, name: str, shape: Sequence[Dim]) -> None:
        self.outputs[name] = x

    def indices(self, node: Node, x: np.ndarray | None = None) -> np.ndarray:
        assert node.pool is not None
        return maxpool_indices(self.values[node.inputs[0]] if x is None else x, node.pool)

    def finish(self) -> dict[str, np.ndarray]:
        """The original outputs (downstream of a replaced tensor recomputed) and the hook's outputs, by name."""
        values = {**self.values, **self.replaced}
        changed = set(self.replaced)
        for node in self.graph.nodes:
            if set(node.outputs) & set(self.replaced) or not changed & set(node.inputs):
                continue
            outs = self.run_node(node, [values[i] if i else None for i in node.inputs], False)
            values.update(zip(node.outputs, outs, strict=False))
            changed.update(node.outputs)
        return {**{name: values[name] for name in self.graph.outputs}, **self.outputs}


def evaluate(graph: GraphView, feeds: Mapping[str, np.ndarray], constants: Mapping[str, np.ndarray],
             run_node: RunNode) -> dict[str, np.ndarray]:  # fmt: skip
    """Every tensor's value when the original model runs on ``feeds``."""
    values = {**constants, **feeds}
    for node in graph.nodes:
        outs = run_node(node, [values[i] if i else None for i in node.inputs], False)
        values.update(zip(node.outputs, outs, strict=False))  # optional outputs may be left out
    return values


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return np.asarray(np.trunc(a / b), np.result_type(a, b))  # ONNX integer division truncates
    return np.asarray(np.divide(a, b), np.result_type(a, b))


def _topk(x: np.ndarray, k: int, axis: int, largest: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-x if largest else x, axis=axis, kind="stable")  # ties: the lower index first, as ONNX
    indices = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, indices, axis=axis), indices.astype(np.int64)


def pooled_size(size: int, pool: Pooling, axis: int) -> int:
    """The output length of a 2-D pool along ``axis`` (0: height, 1: width), torch's and ONNX's rule: rounded up
    with ``ceil``, but a last window that would start in the end padding is dropped."""
    w = pool.window
    span = size + w.pads[axis] + w.ends[axis] - w.dilations[axis] * (w.kernel[axis] - 1) - 1
    out = (-(-span // w.strides[axis]) if pool.ceil else span // w.strides[axis]) + 1
    if pool.ceil and (out - 1) * w.strides[axis] >= size + w.pads[axis]:
        out -= 1
    return out


def maxpool_indices(x: np.ndarray, pool: Pooling) -> np.ndarray:
    """The argmax of each window of a 2-D max pool, the first in row-major window order where values tie (as torch
    and ONNX Runtime), as positions in ``x`` flattened whole."""
    n, c, h, w = x.shape
    win = pool.window
    out_h, out_w = pooled_size(h, pool, 0), pooled_size(w, pool, 1)
    best = np.full((n, c, out_h, out_w), -np.inf, np.float64)
    where = np.zeros((n, c, out_h, out_w), np.int64)
    base = (np.arange(n)[:, None] * c + np.arange(c)[None, :])[:, :, None, None] * h * w
    for th in range(win.kernel[0]):
        rows = np.arange(out_h) * win.strides[0] - win.pads[0] + th * win.dilations[0]
        for tw in range(win.kernel[1]):
            cols = np.arange(out_w) * win.strides[1] - win.pads[1] + tw * win.dilations[1]
            inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
            values = x[:, :, np.clip(rows, 0, h - 1)][:, :, :, np.clip(cols, 0, w - 1)]
            better = inside & (values > best)  # strictly greater: the first maximum stays
            best = np.where(better, values, best)
            where = np.where(better, base + (np.clip(rows, 0, h - 1) * w)[:, None] + np.clip(cols, 0, w - 1), where)
    return where


def _conv_transpose(x: np.ndarray, weight: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """ONNX ConvTranspose (2-D): every input value spreads its kernel over the output, stride apart."""
    n, channels, h, w = x.shape
    groups, (sh, sw), (dh, dw) = a["group"], a["strides"], a["dilations"]
    (ph, pw, eh, ew), (oh, ow) = a["pads"], a["output_padding"]
    per_in, per_out, kh, kw = channels // groups, weight.shape[1], weight.shape[2], weight.shape[3]
    full = np.zeros((n, per_out * groups, (h - 1) * sh + (kh - 1) * dh + 1 + oh, (w - 1) * sw + (kw - 1) * dw + 1 + ow),
                    np.result_type(x, weight))  # fmt: skip
    for g in range(groups):
        xs, ws = x[:, g * per_in : (g + 1) * per_in], weight[g * per_in : (g + 1) * per_in]
        for th in range(kh):
            for tw in range(kw):
                spread = np.einsum("nchw,cm->nmhw", xs, ws[:, :, th, tw])
                full[:, g * per_out : (g + 1) * per_out, th * dh : th * dh + (h - 1) * sh + 1 : sh,
                     tw * dw : tw * dw + (w - 1) * sw + 1 : sw] += spread  # fmt: skip
    return full[:, :, ph : full.shape[2] - eh, pw : full.shape[3] - ew]


def _conv(x: np.ndarray, weight: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """ONNX Conv (2-D, no bias): every output value sums its kernel's window of the padded input."""
    n, channels, h, w = x.shape
    groups, (sh, sw), (dh, dw) = a["group"], a["strides"], a["dilations"]
    ph, pw, eh, ew = a["pads"]
    per_in, (per_out_all, _, kh, kw) = channels // groups, weight.shape
    per_out = per_out_all // groups
    padded = np.pad(x, ((0, 0), (0, 0), (ph, eh), (pw, ew)))
    out_h, out_w = (h + ph + eh - dh * (kh - 1) - 1) // sh + 1, (w + pw + ew - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, per_out_all, out_h, out_w), np.result_type(x, weight))
    for g in range(groups):
        xs, ws = padded[:, g * per_in : (g + 1) * per_in], weight[g * per_out : (g + 1) * per_out]
        for th in range(kh):
            for tw in range(kw):
                window = xs[
                    :, :, th * dh : th * dh + (out_h - 1) * sh + 1 : sh, tw * dw : tw * dw + (out_w - 1) * sw + 1 : sw
                ]
                out[:, g * per_out : (g + 1) * per_out] += np.einsum("nchw,mc->nmhw", window, ws[:, :, th, tw])
    return out


def _scatter_add(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, axis: int) -> np.ndarray:
    out: np.ndarray = data.copy()
    positions: list[np.ndarray] = list(np.indices(indices.shape))
    positions[axis] = indices
    np.add.at(out, tuple(positions), updates)
    return out


def _slice(x: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    if "starts" in a:  # static bounds, axis 0
        return x[0][a["starts"][0] : a["ends"][0]]
    cut = [slice(None)] * x[0].ndim
    for axis, start, end in zip(a["axes"], x[1].tolist(), x[2].tolist(), strict=True):
        cut[axis] = slice(start, end)
    return x[0][tuple(cut)]


def _split(x: np.ndarray, sizes: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    return tuple(np.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return np.asarray(e / e.sum(axis=axis, keepdims=True), x.dtype)


# ONNX semantics (opset 18) of the operators the hook's vocabulary emits; x: the inputs, a: the attributes.
_OPS: dict[str, Callable[[list[np.ndarray], dict[str, Any]], np.ndarray | tuple[np.ndarray, ...]]] = {
    "Add": lambda x, a: np.add(x[0], x[1]),
    "Sub": lambda x, a: np.subtract(x[0], x[1]),
    "Mul": lambda x, a: np.multiply(x[0], x[1]),
    "Div": lambda x, a: _divide(x[0], x[1]),
    "Greater": lambda x, a: np.greater(x[0], x[1]),
    "Equal": lambda x, a: np.equal(x[0], x[1]),
    "Abs": lambda x, a: np.abs(x[0]),
    "Floor": lambda x, a: np.floor(x[0]),
    "Relu": lambda x, a: np.maximum(x[0], np.zeros((), x[0].dtype)),
    "Sigmoid": lambda x, a: (1 / (1 + np.exp(-x[0]))).astype(x[0].dtype),
    "Round": lambda x, a: np.round(x[0]),  # half to even, as ONNX
    "Exp": lambda x, a: np.exp(x[0]),
    "Erf": lambda x, a: np.vectorize(math.erf, otypes=[x[0].dtype])(x[0]),
    "Tanh": lambda x, a: np.tanh(x[0]),
    "Sqrt": lambda x, a: np.sqrt(x[0]),
    "Neg": lambda x, a: np.negative(x[0]),
    "Pow": lambda x, a: np.power(x[0], x[1]).astype(x[0].dtype),
    "Cast": lambda x, a: x[0].astype(a["to"]),
    "Where": lambda x, a: np.where(x[0], x[1], x[2]),
    "Shape": lambda x, a: np.array(x[0].shape, np.int64),
    "Slice": _slice,
    "Concat": lambda x, a: np.concatenate(x, axis=a["axis"]),
    "Range": lambda x, a: np.arange(int(x[0]), int(x[1]), int(x[2]), dtype=np.int64),
    "Reshape": lambda x, a: np.reshape(x[0], [int(d) for d in x[1]]),
    "Unsqueeze": lambda x, a: np.expand_dims(x[0], a["axes"][0]),
    "Transpose": lambda x, a: np.transpose(x[0], a["perm"]),
    "Expand": lambda x, a: np.broadcast_to(x[0], np.broadcast_shapes(x[0].shape, tuple(int(d) for d in x[1]))),
    "Gather": lambda x, a: np.take(x[0], x[1], axis=a["axis"]),
    "GatherElements": lambda x, a: np.take_along_axis(x[0], x[1], axis=a["axis"]),
    "MatMul": lambda x, a: np.matmul(x[0], x[1]),
    "Softmax": lambda x, a: _softmax(x[0], a["axis"]),
    "ReduceMin": lambda x, a: np.min(x[0], axis=tuple(a["axes"]), keepdims=bool(a["keepdims"])),
    "ReduceMax": lambda x, a: np.max(x[0], axis=tuple(a["axes"]), keepdims=bool(a["keepdims"])),
    "ReduceSum": lambda x, a: np.sum(x[0], axis=tuple(a["axes"]), keepdims=bool(a["keepdims"])),
    "ReduceMean": lambda x, a: np.mean(x[0], axis=tuple(a["axes"]), keepdims=bool(a["keepdims"])),
    "ConvTranspose": lambda x, a: _conv_transpose(x[0], x[1], a),
    "Conv": lambda x, a: _conv(x[0], x[1], a),
    "Pad": lambda x, a: np.pad(x[0], list(zip(a["pads"][: x[0].ndim], a["pads"][x[0].ndim :], strict=True))),
    "Split": lambda x, a: _split(x[0], x[1], a["axis"]),
    "ScatterElements": lambda x, a: _scatter_add(x[0], x[1], x[2], a["axis"]),
    "TopK": lambda x, a: _topk(x[0], a["k"], a["axis"], a["largest"]),
}
