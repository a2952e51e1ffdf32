"""Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021): Grad-CAM integrated along the straight path from a black
image x' to the image x, in M Riemann steps x_m = x' + (m / M)(x - x'), m = 1..M:

    L = ReLU( (1 / M) sum_m sum_k w_k(x_m) (A_k(x_m) - A_k(x')) ),    w_k(x_m) = mean_ij dy_c(x_m) / dA_k(x_m).

Each step needs the network's forward at x_m, not only the tail's: the steps run as extra rows of the same
inference through a copy of the network, M B rows (x_M = x itself, so the copy's last B rows repeat the original
path's: one copy, no concatenation of the two), and the black image's map through a copy of the network up to the
target, one row. The gradients then run on M B K' rows. The original path is not touched: its prediction stays
bit for bit the plain model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ovxai.graph.ops import END, Ops
from ovxai.graph.view import GraphView, Kind


def network_copy(ops: Ops[Any], graph: GraphView, image: str, fed: Any, end: str) -> dict[str, Any]:
    """Every node that depends on the image and leads to ``end``, copied to read ``fed`` for the image: their
    counterparts by original tensor name."""
    wanted = graph.ancestors([end])
    copies: dict[str, Any] = {image: fed}
    for node in graph.nodes:
        if node.name not in wanted or all(graph.kind.get(o) is Kind.CONSTANT for o in node.outputs if o):
            continue
        inputs = [copies.get(i, ops.tensor(i)) if i else None for i in node.inputs]
        copies.update(zip(node.outputs, ops.copy_node(node, inputs), strict=True))
    return copies


def scaled_images(ops: Ops[Any], x: Any, baseline: Sequence[float], steps: int, dtype: str) -> tuple[Any, Any]:
    """(M B, C, H, W) rows x' + (m / M)(x - x'), steps major (row m B + b), and the (1, C, H, W) black image x'."""
    black = ops.cast(ops.f32(np.asarray(baseline, np.float32).reshape(1, -1, 1, 1)), dtype)
    fractions = ops.cast(ops.f32((np.arange(1, steps + 1, dtype=np.float32) / steps).reshape(-1, 1, 1, 1, 1)), dtype)
    moved = ops.binary("Add", ops.binary("Mul", ops.binary("Sub", x, black), fractions), black)
    rest = ops.slice(ops.shape(x), 1, END)
    rows = ops.reshape(moved, ops.concat([ops.i64([-1]), rest]))
    return rows, ops.expand(black, ops.concat([ops.i64([1]), rest]))


def integrated_map(ops: Ops[Any], grads: Any, acts: Any, black: Any, steps: int, batch: Any, n: Any) -> Any:
    """(K', M B, C, H, W) gradients at the steps' maps ``acts`` (M B, C, H, W) and the black image's map ``black``
    (1, C, H, W) -> the ReLU'd map (K', 1, B, N)."""
    weights = ops.reduce_axes("ReduceMean", grads, [3, 4])
    per_step = ops.reduce("ReduceSum", ops.binary("Mul", weights, ops.binary("Sub", acts, black)), 2)
    per_step = ops.reshape(per_step, ops.concat([ops.i64([-1, steps]), batch, n]))
    return ops.unary("Relu", ops.reduce("ReduceMean", per_step, 1))
