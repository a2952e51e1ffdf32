"""The hook reads its own copies of the original path's activations, never the originals themselves.

An engine compiles a tensor's producer according to who reads it. OpenVINO's CPU plugin fuses a
convolution with its bias, residual add, activation and output quantiser only while nothing else reads
the steps in between, and picks a convolution's output precision (bf16 or f32 under its default
bf16 inference precision) from its readers' needs. A hook that reads the target map T directly is
such a new reader: the plugin then stores T in f32 for the hook and the global pool reads that f32 T
instead of the bf16 one, or splits an INT8 convolution from its quantiser, and the prediction moves
(0.05 to 2 logits on the models measured, in both the f32 and the default precision).

So every activation the hook reads is recomputed by a private copy of the chain that produces it: the
nodes back to the nearest "heavy" node (a convolution, product or pool), following only tensors that
their one reader would fuse. The copy reads the original graph only where an original node of the
same type reads the same tensor (the heavy node's inputs, a residual's other operand), a reader the
engine already plans for. Copying the last convolution costs about one tail's worth of it per image
(ResNet-50 at layer4: one 1 x 1 convolution, 1.2 % of the network), and the original path compiles
exactly as without the hook.
"""

from __future__ import annotations

from typing import Any

from ovxai.graph.view import GraphView, Kind, Node

# Nodes that start a fused chain: their inputs are materialised tensors, read by same-typed copies.
_HEAVY = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool",
    "ReduceMean", "ReduceMax", "ReduceSum", "Resize", "Concat", "Reshape", "Flatten", "Transpose", "Squeeze",
    "Unsqueeze",
})  # fmt: skip
_LONGEST_CHAIN = 16  # nodes: a longer fused chain is not one engines build; read the tensor as it is


class PrivateReads:
    """An :class:`~ovxai.graph.ops.Ops` that hands the hook private copies of original activations.

    Everything else is the wrapped emitter's: constants, shapes and the model's outputs are read as they are
    (an output is already materialised in full precision for the caller)."""

    def __init__(self, ops: Any, graph: GraphView) -> None:
        self._ops, self._graph = ops, graph
        self._copies: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:  # every other operation: the wrapped emitter's
        return getattr(self._ops, name)

    def tensor(self, name: str) -> Any:
        graph = self._graph
        if graph.kind.get(name) is not Kind.ACTIVATION or name in graph.outputs or name not in graph.producer:
            return self._ops.tensor(name)
        if name not in self._copies:
            self._copy_chain(name)
        return self._copies.get(name) or self._ops.tensor(name)

    def _copy_chain(self, name: str) -> None:
        for node in producer_chain(self._graph, name):
            inputs = [self._copies.get(i) or self._input(i) for i in node.inputs]
            self._copies.update(zip(node.outputs, self._ops.copy_node(node, inputs), strict=True))

    def _input(self, name: str) -> Any:
        """An input of a copied node: an activation as it is, a weight as a constant of the copy's own. A copy
        that read the original's weights would be the original's twin, and engines merge twins (common
        subexpression elimination) back into the one node the copy was made to keep apart."""
        if not name:
            return None
        shape = self._graph.tensor(name).shape
        if self._graph.kind.get(name) is not Kind.CONSTANT or shape is None or not all(isinstance(d, int) for d in shape):
            return self._ops.tensor(name)
        return self._ops.relaid(name, list(shape), list(range(len(shape))))


def producer_chain(graph: GraphView, name: str) -> list[Node]:
    """The nodes that compute ``name`` back to the nearest heavy node, through tensors that only the chain reads
    (topological order); empty where that chain would be longer than an engine fuses."""
    found: dict[str, Node] = {}
    todo = [graph.producer[name]]
    while todo:
        node = todo.pop()
        if node.name in found:
            continue
        found[node.name] = node
        if len(found) > _LONGEST_CHAIN or node.has_subgraph:
            return []
        if node.op in _HEAVY:
            continue
        for i in node.inputs:
            source = graph.producer.get(i)
            if source is None or graph.kind.get(i) is not Kind.ACTIVATION or i in graph.outputs:
                continue
            if len(graph.consumers.get(i, [])) == 1:  # read by this node alone: fused into its chain
                todo.append(source)
    order = {n.name: k for k, n in enumerate(graph.nodes)}
    return sorted(found.values(), key=lambda n: order[n.name])
