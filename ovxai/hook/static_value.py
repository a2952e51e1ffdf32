"""The value of a tensor that no image decides: a mask or bias built from constants and the model's static
shapes, evaluated per image (the batch read as 1) in numpy, op by op, for the few ops that build them.

A transformer's attention may add such a term to its scores: transformers 5's all-pass (B, 1, T, T) mask through
torch's dynamo exporter is ``Where(Expand(all-True, [B, 1, T, T]), 0, -inf)``. Whether the term is the same for
every pair of tokens decides whether the short sequence can keep it (:mod:`ovxai.hook.paths.vit_short`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ovxai.graph.view import GraphView, Kind, Node

_LIMIT = 1 << 20  # elements: a term larger than this is not evaluated (the short sequence then declines)

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Equal": np.equal,
    "Less": np.less,
    "Greater": np.greater,
    "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and,
    "Or": np.logical_or,
}
_RESHAPED = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"})


def static_value(graph: GraphView, name: str) -> np.ndarray | None:
    """``name``'s value for one image, or None: computed from the input's data, from a constant the view does not
    hold, or through an op not modelled here."""
    memo: dict[str, np.ndarray | None] = {}

    def value(tensor: str) -> np.ndarray | None:
        if tensor not in memo:
            memo[tensor] = _value(graph, tensor, value)
        return memo[tensor]

    return value(name)


def _value(graph: GraphView, name: str, value: Callable[[str], np.ndarray | None]) -> np.ndarray | None:
    if name in graph.values:
        return np.asarray(graph.values[name])
    node = graph.producer.get(name)
    if node is None or graph.kind.get(name) is Kind.ACTIVATION:
        return None
    if node.op == "Shape":
        return _shape(graph, node)
    inputs = [value(i) if i else None for i in node.inputs]
    if any(x is None for i, x in zip(node.inputs, inputs, strict=True) if i):
        return None
    try:
        out = _evaluated(graph, node, name, inputs)
    except (ValueError, IndexError, TypeError):
        return None
    return out if out is not None and out.size <= _LIMIT else None


def _shape(graph: GraphView, node: Node) -> np.ndarray | None:
    source = graph.tensor(node.inputs[0]).shape
    if source is None:
        return None
    dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(source)]  # one image
    length = (graph.tensor(node.outputs[0]).shape or [None])[0]
    start = node.start % len(dims) if node.start < 0 else node.start
    read = dims[start : start + length] if isinstance(length, int) else dims[start:]
    return np.array(read, np.int64) if all(isinstance(d, int) for d in read) else None


def _evaluated(graph: GraphView, node: Node, name: str, inputs: list[np.ndarray | None]) -> np.ndarray | None:
    x = [i for i in inputs if i is not None]
    if node.op in _BINARY and len(x) == 2:
        return np.asarray(_BINARY[node.op](x[0], x[1]))
    if node.op == "Div" and len(x) == 2:
        return np.asarray(x[0] // x[1] if x[0].dtype.kind in "iu" else x[0] / x[1])
    if node.op == "Not":
        return np.asarray(np.logical_not(x[0]))
    if node.op == "Neg":
        return np.asarray(np.negative(x[0]))
    if node.op == "Where" and len(x) == 3:
        return np.asarray(np.where(x[0], x[1], x[2]))
    if node.op == "Cast":
        dtype = graph.tensor(name).dtype
        return x[0].astype(dtype) if dtype else None
    if node.op == "Expand":
        return np.array(np.broadcast_to(x[0], np.broadcast_shapes(x[0].shape, tuple(int(d) for d in x[1]))))
    if node.op == "Concat" and all(a.ndim == 1 for a in x):
        return np.concatenate(x)
    if node.op in _RESHAPED:
        shape = graph.tensor(name).shape
        if shape is None:
            return None
        dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(shape)]
        fixed = [d for d in dims if isinstance(d, int)]
        return x[0].reshape(fixed) if len(fixed) == len(dims) else None
    return None


def uniform(value: np.ndarray) -> bool:
    """Every entry the same (a term that treats every pair of tokens alike)."""
    return value.size > 0 and bool(np.all(value == value.reshape(-1)[0]))
