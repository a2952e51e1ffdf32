"""Freeing a batch size that an exporter baked into the graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovxai.errors import OvxaiError
from ovxai.graph.view import GraphView, Node


@dataclass(frozen=True)
class ReshapeFix:
    """A Reshape whose constant target bakes in the export's batch size: ``target`` has 0 there instead,
    meaning "copy the batch from the data" (adapters emit that with their copy-zero semantics)."""

    node: Node
    target: np.ndarray


def plan_free_batch(graph: GraphView) -> list[ReshapeFix]:
    """The Reshapes to rewrite so that a model exported with a fixed batch B takes any batch.

    Exporters bake the example's batch into Reshape targets (``x.view(1, -1)``). Those whose data and
    result both start with B and whose target starts with B get 0 there. A target that holds another
    0 cannot be rewritten that way and is refused.
    """
    batch = graph.input_dims()[0] if graph.input_dims() else None
    if not isinstance(batch, int):
        return []
    fixes = []
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2:
            continue
        target = graph.values.get(node.inputs[1])
        data, result = graph.tensor(node.inputs[0]).shape, graph.tensor(node.outputs[0]).shape
        if target is None or target.ndim != 1 or not target.size or int(target[0]) != batch:
            continue
        if not (data and result and data[0] == batch == result[0]):
            continue
        if 0 in target[1:]:
            raise OvxaiError(
                f"the batch size is fixed to {batch} in node '{node.name}'", "re-export the model with a dynamic batch"
            )
        fixed = target.astype(np.int64).copy()
        fixed[0] = 0
        fixes.append(ReshapeFix(node, fixed))
    return fixes
