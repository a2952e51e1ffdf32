"""The hook's own copies of the original path's activations, for models where reading the originals moves the
prediction (the export's second try, ``ovxai.exporter.pipeline.READS``).

An engine compiles a tensor's producer according to who reads it. OpenVINO's CPU plugin fuses a
convolution with its bias, activation and output quantiser only while nothing else reads the steps in
between; it sums a residual add into the other operand's memory in place only while nothing reads that
operand afterwards; and under its default bf16 inference precision it stores a map that any other node
reads (even a Result) in f32, so that the global pool averages the f32 map instead of the bf16 one. A
hook reading the target map T, or the residual stream beside it, is such a reader, and the prediction
moves (0.005 to 38 logits on the models measured: in the default precision, and for INT8 models in f32).

So every activation the hook reads is recomputed by a private copy of the nodes that produce it, back
through every element-wise step (residual adds included) to the nearest weighted nodes (convolutions,
products): the copy reads the original graph only as convolutions and products read it, which neither
fuse with nor write into their inputs. Engines merge identical subgraphs (common-subexpression
elimination compares constants by value, after weight compression), which would hand the hook the
original again, so each copied weighted node computes one more output channel, of zero weights, which
the copy drops: the same numbers from a node no engine can merge with the original. A weight dequantised
in the graph gets that channel where it is stored (its integers, its per-channel scale and zero point), so
that the copy still runs as a quantised convolution. For ResNet-50 at
layer4 the copy is the last convolution of each block and the stage's downsampling (6 % of the
network's MACs, 0.1-0.2x of plain inference). The export tries the hook on the original activations first
and builds it over this class only where its check finds the prediction moved; where even the copies move
it, over a copy of the whole network (``whole``: the hook then shares nothing with the original but the
input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from ovxai.graph.ops import Builder, Ops
from ovxai.graph.view import Dim, GraphView, Kind, Node

T = TypeVar("T")

_LONGEST_CHAIN = 256  # nodes: beyond, no weighted node bounds the copy; the tensor is read as it is


class PrivateReads(Generic[T]):
    """A :class:`~ovxai.graph.ops.Builder` that hands the hook private copies of original activations.

    It wraps the format's builder: ``tensor`` (and a MaxPool's argmax, ``indices``) of an activation of the original
    path gives the copy's; everything else is the wrapped builder's. Constants, shapes, the image input and the
    model's outputs are read as they are (an output is materialised for the caller anyway)."""

    def __init__(self, builder: Builder[T], graph: GraphView, whole: bool = False) -> None:
        self._builder, self._graph, self._whole = builder, graph, whole
        self._ops = Ops(builder)  # the copies' own helper nodes (padding, channel selection)
        self._copies: dict[str, T] = {}

    # -- reads: the copies' -------------------------------------------------------------------------

    def tensor(self, name: str) -> T:
        graph = self._graph
        if graph.kind.get(name) is not Kind.ACTIVATION or name in graph.outputs or name not in graph.producer:
            return self._builder.tensor(name)
        if name not in self._copies:
            chain, widened = private_chain(graph, name, self._whole)
            for node in chain:
                if node.name in widened:
                    self._copies[node.outputs[0]] = self._widened_copy(node, widened[node.name])
                    continue
                inputs = [self._copies[i] if i in self._copies else self._constant(i) for i in node.inputs]
                self._copies.update(zip(node.outputs, self._builder.copy_node(node, inputs), strict=True))
        return self._copies[name] if name in self._copies else self._builder.tensor(name)

    def indices(self, node: Node, x: T | None = None) -> T:
        """A MaxPool's argmax: of its private input where the hook reads one (the original pool keeps its readers)."""
        if x is None:
            source = self.tensor(node.inputs[0])
            if node.inputs[0] in self._copies:
                x = source
        return self._builder.indices(node, x)

    # -- everything else: the wrapped builder's -----------------------------------------------------

    def node(self, op: str, inputs: Sequence[T], outputs: int = 1, **attrs: Any) -> list[T]:
        return self._builder.node(op, inputs, outputs, **attrs)

    def constant(self, value: np.ndarray) -> T:
        return self._builder.constant(value)

    def dtype(self, name: str) -> str:
        return self._builder.dtype(name)

    def stored(self, name: str) -> tuple[np.ndarray, str | None] | None:
        return self._builder.stored(name)

    def replace(self, name: str, x: T) -> None:
        self._builder.replace(name, x)

    def copy_node(self, node: Node, inputs: Sequence[T | None], unpadded: bool = False) -> list[T]:
        return self._builder.copy_node(node, inputs, unpadded)

    def output(self, x: T, name: str, shape: Sequence[Dim]) -> None:
        self._builder.output(x, name, shape)

    def finish(self) -> Any:
        return self._builder.finish()

    # -- the copies -----------------------------------------------------------------------------------

    def _constant(self, name: str) -> T | None:
        """An input of a copied node from outside the chain: a constant computed in the graph (a weight
        decompressed from FP16 or dequantised) gets the copy's own computation, so that the original's stays
        with its one reader (the plugin folds a decompressed bias into its convolution only then)."""
        if not name:
            return None
        producer = self._graph.producer.get(name)
        if self._graph.kind.get(name) is not Kind.CONSTANT or producer is None:
            return self._builder.tensor(name)
        if name not in self._copies:
            inputs = [self._constant(i) for i in producer.inputs]
            self._copies.update(zip(producer.outputs, self._builder.copy_node(producer, inputs), strict=True))
        return self._copies[name]

    def _widened_weight(self, name: str, axis: int) -> T:
        """The weight ``name`` with one more zero slice on ``axis``, added where the weight is stored: a weight
        dequantised in the graph (Cast, Sub of a zero point, Mul by a scale: NNCF's INT8 weights) is widened at
        its stored integers and at each per-channel parameter, so that the engine still runs a quantised kernel."""
        graph, ops = self._graph, self._ops
        shape = graph.tensor(name).shape or ()
        producer = graph.producer.get(name)
        if producer is not None and producer.op in ("Cast", "Sub", "Mul") and graph.kind.get(name) is Kind.CONSTANT:
            inputs: list[T | None] = []
            for i in producer.inputs:
                own = graph.tensor(i).shape
                at = None if own is None else axis - (len(shape) - len(own))  # numpy broadcasting aligns the ends
                if own is None or (at is not None and at >= 0 and own[at] not in (1, shape[axis])):
                    break  # not a per-channel parameter: widened after it
                broadcast = at is None or at < 0 or own[at] == 1
                inputs.append(self._constant(i) if broadcast else self._widened_weight(i, at))  # type: ignore[arg-type]
            else:
                return self._builder.copy_node(producer, inputs)[0]
        zero_shape = [1 if k == axis else int(d) for k, d in enumerate(shape)]  # type: ignore[arg-type]
        dtype = ops.dtype(name)
        try:
            zero = self._builder.constant(np.zeros(zero_shape, np.dtype(dtype)))
        except TypeError:  # a type numpy lacks (bfloat16): a float32 zero converted in the graph
            zero = ops.expand(ops.cast(ops.f32(0.0), dtype), ops.i64(zero_shape))
        return ops.concat([ops.tensor(name), zero], axis)

    def _widened_copy(self, node: Node, widening: Widening) -> T:
        """The weighted node computed with one more output channel of zero weights, that channel dropped."""
        ops = self._ops
        inputs: list[T | None] = []
        for port, name in enumerate(node.inputs):
            if name in self._copies:
                inputs.append(self._copies[name])
            elif port in widening.padded:
                inputs.append(self._widened_weight(name, widening.padded[port]))
            else:
                inputs.append(self._constant(name))
        wide = self._builder.copy_node(node, inputs)[0]
        # the channels kept, as constant indices: the copy's shape stays known to shape inference (a static batch)
        return ops.gather(wide, ops.i64(list(range(widening.channels))), widening.output_axis)


class Widening:
    """How a weighted node gets one more output channel: the axis of each weight input that counts its output
    channels, and the output's channel axis and count."""

    def __init__(self, padded: dict[int, int], output_axis: int, channels: int) -> None:
        self.padded, self.output_axis, self.channels = padded, output_axis, channels


def private_chain(graph: GraphView, name: str, whole: bool = False) -> tuple[list[Node], dict[str, Widening]]:
    """The nodes (topological order) that compute ``name`` from the nearest weighted nodes, and how each of those
    weighted nodes is widened; ([], {}) where no weighted node bounds the copy. ``whole``: every node that computes
    ``name`` from the model's input, the first weighted nodes widened (the copy then shares nothing with the
    original but the input and what precedes the first convolution)."""
    found: dict[str, Node] = {}
    todo = [graph.producer[name]]
    while todo:
        node = todo.pop()
        if node.name in found:
            continue
        found[node.name] = node
        if node.has_subgraph or (not whole and len(found) > _LONGEST_CHAIN):
            return [], {}
        if not whole and _widening(graph, node) is not None:
            continue
        # Up through every activation input: an element-wise reader of a shared tensor (a residual add) would be
        # the one that keeps the engine from summing into that tensor in place.
        todo.extend(
            graph.producer[i] for i in node.inputs if graph.kind.get(i) is Kind.ACTIVATION and i in graph.producer
        )
    produced = {o for n in found.values() for o in n.outputs}
    widened = {}
    for node in found.values():
        widening = _widening(graph, node)
        reads_copies = any(i in produced for i in node.inputs)
        if widening is not None and (not whole or not reads_copies):
            widened[node.name] = widening
    if not widened:
        return [], {}
    order = {n.name: k for k, n in enumerate(graph.nodes)}
    return sorted(found.values(), key=lambda n: order[n.name]), widened


def _widening(graph: GraphView, node: Node) -> Widening | None:
    """How to widen an ungrouped convolution or a product by a constant weight (None: not such a node)."""
    out = graph.tensor(node.outputs[0]).shape
    weights = [graph.tensor(i).shape if i and _float_constant(graph, i) else None for i in node.inputs[1:]]
    if out is None or not weights or weights[0] is None or not all(isinstance(d, int) for d in weights[0]):
        return None
    weight = weights[0]
    if node.op == "Conv":
        data = graph.tensor(node.inputs[0]).shape
        if len(weight) != 4 or data is None or len(data) != 4 or data[1] != weight[1]:
            return None  # grouped (depthwise) or not 2-D: a channel more would change its groups
        padded = {1: 0}
        if len(weights) > 1 and weights[1] is not None and len(weights[1]) == 1:
            padded[2] = 0  # ONNX's bias input
        return Widening(padded, 1, int(weight[0]))  # type: ignore[arg-type]
    if node.op in ("MatMul", "Gemm") and len(weight) == 2 and node.plain_product:
        axis = 0 if node.transpose_b else 1
        padded = {1: axis}
        bias = weights[1] if len(weights) > 1 else None
        if node.op == "Gemm" and bias is not None and bias and bias[-1] == weight[axis]:
            padded[2] = len(bias) - 1
        return Widening(padded, len(out) - 1, int(weight[axis]))  # type: ignore[arg-type]
    return None


def _float_constant(graph: GraphView, name: str) -> bool:
    return graph.kind.get(name) is Kind.CONSTANT and graph.tensor(name).is_float
